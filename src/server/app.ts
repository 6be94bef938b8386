/** The HTTP face of the cache: one route table and one wrapper around every handler. The
 * wrapper parses the path once, authorises the route it names, runs the handler, maps errors
 * to statuses, and is where request observers (access log, metrics, traces) attach. */
import type { Cache } from "../cache/cache.ts";
import type { Pins } from "../cache/pins.ts";
import type { Realisations } from "../cache/realisations.ts";
import type { Uploads } from "../cache/uploads.ts";
import type { Logger } from "../telemetry/logger.ts";
import { createAuthGuard, type AuthOptions } from "./auth.ts";
import { getCacheInfo, getHealth, getPublicKey, getSummary } from "./cache-info.ts";
import { errorResponse, notFound, textResponse } from "./errors.ts";
import { getNar, getNarForReplica } from "./nar.ts";
import { REPLICA_PREFIX } from "../cache/replica-peers.ts";
import { getMetrics } from "./metrics.ts";
import { getNarInfo } from "./narinfo.ts";
import { buildTraceOf, getRealisation, realisationOf } from "./realisation.ts";
import { statusOrSummary, type StatusFigures } from "./status-page.ts";
import { deletePin, getPins, postPin } from "./pins.ts";
import { requestSegments, Router, type Route } from "./router.ts";
import { deleteNar, deleteNarInfo, getLog, putCacheInfo, putLog, putNar, putNarInfo, putRealisation, type WritePolicy } from "./write.ts";

export interface ServerDeps {
  cache: Cache;
  uploads: Uploads;
  realisations: Realisations;
  pins: Pins;
  hostname: string;
  policy: WritePolicy;
  auth: AuthOptions;
  logger: Logger;
  observers?: RequestObserver[];
  /** The Prometheus text of every metric; absent: no /metrics route (--prometheus-enabled off). */
  metricsText?: () => Promise<string>;
  /** The figures of the status page (GET / asking for HTML). */
  status?: () => Promise<StatusFigures>;
}

export interface RequestEvent {
  /** the route's name, "unmatched" when none fits, "malformed" when the target could not be
   * parsed */
  route: string;
  method: string;
  status: number;
  /** performance.now() when the request arrived */
  startedAt: number;
  req: Request;
  /** the TCP peer's address ("" when unknown) */
  peer: string;
  /** body bytes sent: 0 for HEAD and empty bodies, the Content-Length when one is set (a
   * stored NAR goes out by sendfile, never through JavaScript), else counted as it streams */
  bytes: number;
}

/** Watches every request once: `started` when it arrives, `around` wraps its handling (a
 * tracer makes the request's span current there), `finished` once the body is sent (or, for
 * a body of known length, once its headers are). */
export interface RequestObserver {
  started?(req: Request): void;
  around?<T>(req: Request, peer: string, run: () => Promise<T>): Promise<T>;
  finished(event: RequestEvent): void;
}

/** Table order decides between patterns that fit the same path: literals first. */
export function routeTable({ cache, uploads, realisations, pins, hostname, policy, auth, metricsText, status }: ServerDeps): Route[] {
  const pinPolicy = { tokenRequired: Boolean(auth.getToken || auth.putToken), policy };
  return [
    { name: "health", method: "GET", pattern: "/healthz", access: "open", handler: getHealth() },
    { name: "cache-info", method: "GET", pattern: "/nix-cache-info", uploadPrefix: true, access: "read", handler: getCacheInfo(cache) },
    { name: "cache-info", method: "PUT", pattern: "/nix-cache-info", uploadPrefix: true, access: "write", handler: putCacheInfo() },
    { name: "pubkey", method: "GET", pattern: "/pubkey", uploadPrefix: true, access: "read", handler: getPublicKey(cache) },
    { name: "summary", method: "GET", pattern: "/", access: "read", handler: statusOrSummary(status, getSummary(cache, hostname)) },
    ...(metricsText ? [{ name: "metrics", method: "GET", pattern: "/metrics", access: "open", handler: getMetrics(metricsText) } satisfies Route] : []),
    { name: "nar", method: "GET", pattern: "/nar/:file", uploadPrefix: true, access: "read", handler: getNar(cache) },
    { name: "nar", method: "PUT", pattern: "/nar/:file", uploadPrefix: true, access: "write", handler: putNar(uploads, policy) },
    { name: "nar", method: "DELETE", pattern: "/nar/:file", uploadPrefix: true, access: "write", handler: deleteNar(uploads, policy) },
    { name: "replica-nar", method: "GET", pattern: `${REPLICA_PREFIX}nar/:file`, access: "replica", handler: getNarForReplica(cache) },
    { name: "log", method: "GET", pattern: "/log/:drv", uploadPrefix: true, access: "read", handler: getLog(uploads) },
    { name: "log", method: "PUT", pattern: "/log/:drv", uploadPrefix: true, access: "write", handler: putLog(uploads, policy) },
    { name: "realisation", method: "GET", pattern: "/realisations/:file", uploadPrefix: true, access: "read", handler: getRealisation(realisations, realisationOf) },
    { name: "realisation", method: "PUT", pattern: "/realisations/:file", uploadPrefix: true, access: "write", handler: putRealisation(realisations, policy, realisationOf) },
    { name: "build-trace", method: "GET", pattern: "/build-trace-v2/:drv/:output", uploadPrefix: true, access: "read", handler: getRealisation(realisations, buildTraceOf) },
    { name: "build-trace", method: "PUT", pattern: "/build-trace-v2/:drv/:output", uploadPrefix: true, access: "write", handler: putRealisation(realisations, policy, buildTraceOf) },
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

/** The server as the handler sees it: the peer's address, for the access log. */
interface PeerLookup {
  requestIP(req: Request): { address: string } | null;
}

/** The request handler for Bun.serve. */
export function createFetchHandler(deps: ServerDeps): (req: Request, server?: PeerLookup) => Promise<Response> {
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

  if (observers.length === 0) return async (req) => (await respond(req)).res;
  const arounds = observers.filter((o) => o.around);
  return async (req, server) => {
    const startedAt = performance.now();
    for (const observer of observers) observer.started?.(req);
    const peer = server?.requestIP(req)?.address ?? "";
    let run = () => respond(req);
    for (const o of arounds) {
      const inner = run;
      run = () => o.around!(req, peer, inner);
    }
    const { route, res } = await run();
    const finish = (bytes: number) => {
      const event: RequestEvent = { route, method: req.method, status: res.status, startedAt, req, peer, bytes };
      for (const observer of observers) observer.finished(event);
    };
    const length = res.headers.get("content-length");
    if (req.method === "HEAD" || length !== null || res.body === null) {
      finish(req.method === "HEAD" ? 0 : Number(length ?? 0));
      return res;
    }
    return new Response(countedBody(res.body, finish), res);
  };
}

/** The body as it streams, its bytes counted; `done` is told once, at its end or when the
 * client goes away. */
function countedBody(body: ReadableStream<Uint8Array>, done: (bytes: number) => void): ReadableStream<Uint8Array> {
  let bytes = 0;
  let told = false;
  const tell = () => {
    if (!told) (told = true), done(bytes);
  };
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done: end, value } = await reader.read();
        if (end) {
          tell();
          controller.close();
          return;
        }
        bytes += value.byteLength;
        controller.enqueue(value);
      } catch (err) {
        tell();
        controller.error(err);
      }
    },
    cancel(reason) {
      tell();
      return reader.cancel(reason);
    },
  });
}
