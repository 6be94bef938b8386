/** The request observers ncps attaches to its one request wrapper: the access log, the HTTP
 * metrics and the request's trace span. None of them is code inside a handler. */
import type { SpanHandle } from "../telemetry/instruments.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { RequestEvent, RequestObserver } from "./app.ts";
import { clientAddress, type AddressRange } from "./client-address.ts";

/** The path of a request URL, without the query (which nothing of ncps's carries but a
 * client might fill with anything). */
export function requestPath(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return "/";
  const query = url.indexOf("?", start);
  return url.slice(start, query < 0 ? undefined : query);
}

/** Routes a probe or a scraper asks every few seconds: their lines go at debug. */
const quietRoutes = new Set(["health", "metrics"]);

/** One line per request: method, path, status, bytes, duration, client address. */
export function accessLog(logger: Logger, trustedProxies: readonly AddressRange[]): RequestObserver {
  return {
    finished(e) {
      const line = {
        method: e.method,
        path: requestPath(e.req.url),
        route: e.route,
        status: e.status,
        bytes: e.bytes,
        durationMs: Math.round((performance.now() - e.startedAt) * 100) / 100,
        client: clientAddress(e.peer, e.req.headers.get("x-forwarded-for"), trustedProxies),
      };
      if (quietRoutes.has(e.route)) logger.debug("request", line);
      else logger.info("request", line);
    },
  };
}

export interface HttpMetrics {
  requestStarted(): void;
  requestFinished(route: string, method: string, status: number, seconds: number, bytes: number): void;
}

export function httpMetrics(metrics: HttpMetrics): RequestObserver {
  return {
    started: () => metrics.requestStarted(),
    finished: (e) => metrics.requestFinished(e.route, e.method, e.status, (performance.now() - e.startedAt) / 1000, e.bytes),
  };
}

export interface RequestTracer {
  /** `attributes` is asked only when the span records (most are sampled out). */
  startRequestSpan(method: string, headers: Headers, attributes: () => Record<string, string>): SpanHandle | null;
}

/** The request's span: it continues the client's (or load balancer's) `traceparent`, and
 * everything the handler does runs inside it. */
export function requestTracing(tracer: RequestTracer, trustedProxies: readonly AddressRange[]): RequestObserver {
  const spans = new WeakMap<Request, SpanHandle>();
  return {
    around(req, peer, run) {
      const span = tracer.startRequestSpan(req.method, req.headers, () => ({
        "url.path": requestPath(req.url),
        "client.address": clientAddress(peer, req.headers.get("x-forwarded-for"), trustedProxies),
      }));
      if (!span) return run();
      spans.set(req, span);
      return span.run(run);
    },
    finished(e) {
      const span = spans.get(e.req);
      if (!span) return;
      span.setAttributes({ "http.route": e.route, "http.response.status_code": e.status, "http.response.body.size": e.bytes });
      if (e.status >= 500) span.fail(`HTTP ${e.status}`);
      span.end();
    },
  };
}
