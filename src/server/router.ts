/** The request's path, parsed once, and the route it names: authorisation and routing both
 * read this one result, so nothing can be authorised as one path and served as another. */
import { NixFormatError } from "../nix/errors.ts";

/** GET routes also answer HEAD, with the same handler told not to send a body. */
export type RouteMethod = "GET" | "PUT" | "POST" | "DELETE";

/** open: anyone; read: the read token (or the write token); write: the write token;
 * replica: a proof made with the replicas' shared secret (cache/replica-peers.ts). */
export type Access = "open" | "read" | "write" | "replica";

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
      let segment = raw;
      if (raw.includes("%")) {
        try {
          segment = decodeURIComponent(raw);
        } catch {
          throw new NixFormatError("malformed percent-encoding in the request path", "path");
        }
      }
      if (segment.includes("/") || segment === "." || segment === "..") {
        throw new NixFormatError("encoded slash or dot segment in the request path", "path");
      }
      return segment;
    });
}

/** A pattern segment: a literal, or a parameter's name. */
type PatternSegment = { literal: string } | { param: string };

function matchPattern(pattern: PatternSegment[], segments: string[]): Record<string, string> | null {
  if (pattern.length !== segments.length) return null;
  let params: Record<string, string> | null = null;
  for (let i = 0; i < pattern.length; i++) {
    const want = pattern[i]!;
    const got = segments[i]!;
    if ("param" in want) {
      if (got === "") return null;
      (params ??= {})[want.param] = got;
    } else if (want.literal !== got) {
      return null;
    }
  }
  return params ?? {};
}

export class Router {
  private readonly compiled: { route: Route; pattern: PatternSegment[] }[];

  constructor(routes: Route[]) {
    this.compiled = routes.map((route) => ({
      route,
      pattern: (route.pattern === "/" ? [] : route.pattern.slice(1).split("/")).map((p) =>
        p.startsWith(":") ? { param: p.slice(1) } : { literal: p },
      ),
    }));
  }

  /** Where a route fits the path: as it is, or under /upload/ when the route is offered there. */
  private fit(route: Route, pattern: PatternSegment[], segments: string[], underUpload: string[] | null): RouteMatch | null {
    const direct = matchPattern(pattern, segments);
    if (direct) return { route, params: direct, upstream: true };
    if (underUpload && route.uploadPrefix) {
      const prefixed = matchPattern(pattern, underUpload);
      if (prefixed) return { route, params: prefixed, upstream: false };
    }
    return null;
  }

  /** The first route in table order for this method and path; otherwise the methods the path
   * has (for a 405), empty when it names nothing at all. */
  match(method: string, segments: string[]): RouteMatch | { allowed: RouteMethod[] } {
    const wanted = method === "HEAD" ? "GET" : method;
    const underUpload = segments[0] === UPLOAD_PREFIX ? segments.slice(1) : null;
    for (const { route, pattern } of this.compiled) {
      if (route.method !== wanted) continue;
      const found = this.fit(route, pattern, segments, underUpload);
      if (found) return found;
    }
    const allowed: RouteMethod[] = [];
    for (const { route, pattern } of this.compiled) {
      if (!allowed.includes(route.method) && this.fit(route, pattern, segments, underUpload)) allowed.push(route.method);
    }
    return { allowed };
  }
}
