/** The HTTP face of the cache: one route table and one wrapper around every handler. The
 * wrapper parses the path once, authorises the route it names, runs the handler, maps errors
 * to statuses, and is where request observers (access log, metrics, traces) attach. */
import type { Cache } from "../cache/cache.ts";
import type { Pins } from "../cache/pins.ts";
import type { Uploads } from "../cache/uploads.ts";
import type { Logger } from "../telemetry/logger.ts";
import { createAuthGuard, type AuthOptions } from "./auth.ts";
import { getCacheInfo, getHealth, getPublicKey, getSummary } from "./cache-info.ts";
import { errorResponse, notFound, textResponse } from "./errors.ts";
import { getNar } from "./nar.ts";
import { getNarInfo } from "./narinfo.ts";
import { deletePin, getPins, postPin } from "./pins.ts";
import { requestSegments, Router, type Route } from "./router.ts";
import { deleteNar, deleteNarInfo, getLog, putCacheInfo, putLog, putNar, putNarInfo, type WritePolicy } from "./write.ts";

export interface ServerDeps {
  cache: Cache;
  uploads: Uploads;
  pins: Pins;
  hostname: string;
  policy: WritePolicy;
  auth: AuthOptions;
  logger: Logger;
  observers?: RequestObserver[];
}

/** Told about every request once it has its response (the body may still be streaming). */
export interface RequestObserver {
  /** `route` is the route's name, "unmatched" when none fits, "malformed" when the target
   * could not be parsed */
  finished(event: { route: string; method: string; status: number; startedAt: number; req: Request }): void;
}

/** Table order decides between patterns that fit the same path: literals first. */
export function routeTable({ cache, uploads, pins, hostname, policy, auth }: ServerDeps): Route[] {
  const pinPolicy = { tokenRequired: Boolean(auth.getToken || auth.putToken), policy };
  return [
    { name: "health", method: "GET", pattern: "/healthz", access: "open", handler: getHealth() },
    { name: "cache-info", method: "GET", pattern: "/nix-cache-info", access: "read", handler: getCacheInfo(cache) },
    { name: "cache-info", method: "PUT", pattern: "/nix-cache-info", access: "write", handler: putCacheInfo() },
    { name: "pubkey", method: "GET", pattern: "/pubkey", access: "read", handler: getPublicKey(cache) },
    { name: "summary", method: "GET", pattern: "/", access: "read", handler: getSummary(cache, hostname) },
    { name: "nar", method: "GET", pattern: "/nar/:file", uploadPrefix: true, access: "read", handler: getNar(cache) },
    { name: "nar", method: "PUT", pattern: "/nar/:file", uploadPrefix: true, access: "write", handler: putNar(uploads, policy) },
    { name: "nar", method: "DELETE", pattern: "/nar/:file", uploadPrefix: true, access: "write", handler: deleteNar(uploads, policy) },
    { name: "log", method: "GET", pattern: "/log/:drv", access: "read", handler: getLog(uploads) },
    { name: "log", method: "PUT", pattern: "/log/:drv", access: "write", handler: putLog(uploads, policy) },
    { name: "pins", method: "GET", pattern: "/pins", access: "write", handler: getPins(pins, pinPolicy) },
    { name: "pin", method: "POST", pattern: "/pin/:name", access: "write", handler: postPin(pins, pinPolicy) },
    { name: "pin", method: "DELETE", pattern: "/pin/:name", access: "write", handler: deletePin(pins, pinPolicy) },
    { name: "narinfo", method: "GET", pattern: "/:name", uploadPrefix: true, access: "read", handler: getNarInfo(cache) },
    { name: "narinfo", method: "PUT", pattern: "/:name", uploadPrefix: true, access: "write", handler: putNarInfo(uploads, policy) },
    { name: "narinfo", method: "DELETE", pattern: "/:name", uploadPrefix: true, access: "write", handler: deleteNarInfo(uploads, policy) },
  ];
}

/** A request body nobody read (a refused or failed write) is drained away, not left pending. */
async function discardBody(req: Request) {
  if (req.body && !req.bodyUsed) await req.body.cancel().catch(() => {});
}

/** The request handler for Bun.serve. */
export function createFetchHandler(deps: ServerDeps): (req: Request) => Promise<Response> {
  const router = new Router(routeTable(deps));
  const authorise = createAuthGuard(deps.auth);
  const observers = deps.observers ?? [];

  const respond = async (req: Request): Promise<{ route: string; res: Response }> => {
    let segments: string[];
    try {
      segments = requestSegments(req.url);
    } catch (err) {
      return { route: "malformed", res: errorResponse(err, deps.logger, { target: req.url.slice(0, 200) }) };
    }
    const match = router.match(req.method, segments);
    const isRead = req.method === "GET" || req.method === "HEAD";
    if (!("route" in match)) {
      // Unknown paths and verbs need a token like any other: their answer says what exists.
      const denied = authorise(isRead ? "read" : "write", req);
      if (denied) return { route: "unmatched", res: denied };
      if (match.allowed.length === 0) return { route: "unmatched", res: notFound() };
      const allow = match.allowed.flatMap((m) => (m === "GET" ? ["GET", "HEAD"] : [m])).join(", ");
      return { route: "unmatched", res: textResponse(405, `${req.method} is not supported here`, { allow }) };
    }
    const { route } = match;
    const denied = authorise(route.access, req);
    if (denied) return { route: route.name, res: denied };
    try {
      const head = req.method === "HEAD";
      // Bun sends a HEAD answer's headers (Content-Length included) without its body.
      const res = await route.handler({ req, head, params: match.params, upstream: match.upstream });
      return { route: route.name, res };
    } catch (err) {
      await discardBody(req);
      return { route: route.name, res: errorResponse(err, deps.logger, { route: route.name, method: req.method, params: match.params }) };
    }
  };

  return async (req) => {
    const startedAt = performance.now();
    const { route, res } = await respond(req);
    for (const observer of observers) observer.finished({ route, method: req.method, status: res.status, startedAt, req });
    return res;
  };
}
