/** The request's path, parsed once, and the route it names: authorisation and routing both
 * read this one result, so nothing can be authorised as one path and served as another. */
import { NixFormatError } from "../nix/errors.ts";

/** GET routes also answer HEAD, with the same handler told not to send a body. */
export type RouteMethod = "GET" | "PUT" | "POST" | "DELETE";

/** open: anyone; read: the read token (or the write token); write: the write token. */
export type Access = "open" | "read" | "write";

export interface RequestContext {
  req: Request;
  /** a HEAD request: look things up, start nothing, send no body */
  head: boolean;
  /** `:name` segments of the pattern, percent-decoded */
  params: Record<string, string>;
  /** false under /upload/: answer from what ncps holds, never ask an upstream */
  upstream: boolean;
}

export interface Route {
  /** names the route in logs and metrics */
  name: string;
  method: RouteMethod;
  /** "/", "/nix-cache-info", "/nar/:file": literal segments and one-segment parameters */
  pattern: string;
  /** also served under /upload/ (the Go ncps's prefix), with `upstream: false` */
  uploadPrefix?: boolean;
  access: Access;
  handler: (ctx: RequestContext) => Response | Promise<Response>;
}

export interface RouteMatch {
  route: Route;
  params: Record<string, string>;
  upstream: boolean;
}

const UPLOAD_PREFIX = "upload";

/** The decoded segments of the request target's path. The target is parsed by the WHATWG
 * URL rules (so `..`, `%2e%2e` and absolute-form targets resolve before anything looks at
 * the path); the query and fragment are not part of it. A segment that does not decode, or
 * decodes to a slash or a dot segment, is bad input. */
export function requestSegments(url: string): string[] {
  let pathname: string;
  try {
    pathname = new URL(url).pathname;
  } catch {
    throw new NixFormatError("malformed request target", "path");
  }
  if (pathname === "/") return [];
  return pathname
    .slice(1)
    .split("/")
    .map((raw) => {
      let segment: string;
      try {
        segment = decodeURIComponent(raw);
      } catch {
        throw new NixFormatError("malformed percent-encoding in the request path", "path");
      }
      if (segment.includes("/") || segment === "." || segment === "..") {
        throw new NixFormatError("encoded slash or dot segment in the request path", "path");
      }
      return segment;
    });
}

function matchPattern(pattern: string[], segments: string[]): Record<string, string> | null {
  if (pattern.length !== segments.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const want = pattern[i]!;
    const got = segments[i]!;
    if (want.startsWith(":")) {
      if (got === "") return null;
      params[want.slice(1)] = got;
    } else if (want !== got) {
      return null;
    }
  }
  return params;
}

export class Router {
  private readonly compiled: { route: Route; segments: string[] }[];

  constructor(routes: Route[]) {
    this.compiled = routes.map((route) => ({ route, segments: route.pattern === "/" ? [] : route.pattern.slice(1).split("/") }));
  }

  /** The first route in table order whose pattern fits, for any method. */
  private *candidates(segments: string[]): Generator<RouteMatch> {
    const underUpload = segments[0] === UPLOAD_PREFIX ? segments.slice(1) : null;
    for (const { route, segments: pattern } of this.compiled) {
      const direct = matchPattern(pattern, segments);
      if (direct) yield { route, params: direct, upstream: true };
      if (underUpload && route.uploadPrefix) {
        const prefixed = matchPattern(pattern, underUpload);
        if (prefixed) yield { route, params: prefixed, upstream: false };
      }
    }
  }

  /** The route for this method and path; otherwise the methods the path has (for a 405),
   * empty when it names nothing at all. */
  match(method: string, segments: string[]): RouteMatch | { allowed: RouteMethod[] } {
    const wanted = method === "HEAD" ? "GET" : method;
    const allowed: RouteMethod[] = [];
    for (const candidate of this.candidates(segments)) {
      if (candidate.route.method === wanted) return candidate;
      if (!allowed.includes(candidate.route.method)) allowed.push(candidate.route.method);
    }
    return { allowed };
  }
}
