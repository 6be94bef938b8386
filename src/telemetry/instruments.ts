/** What the domain reports about itself, as plain method calls: the cache, the upstreams and
 * the locks take an `Instruments` from the composition root and know nothing of OpenTelemetry
 * or Prometheus (telemetry/metrics.ts implements it; `noInstruments` is the default). Keep
 * every method cheap: the narinfo hit path calls `narInfoServed` once per request. */

export type Attributes = Record<string, string | number | boolean>;

/** One span, or nothing when tracing is off. */
export interface SpanHandle {
  setAttributes(attrs: Attributes): void;
  /** Marks the span failed (status ERROR, the exception recorded). */
  fail(error: unknown): void;
  end(): void;
  /** Runs `fn` with this span as the parent of spans started inside it. */
  run<T>(fn: () => T): T;
}

export type Served = "hit" | "miss";
export type Outcome = "success" | "error";

export interface Instruments {
  /** A narinfo request answered: hit (held by ncps) or miss (asked upstream). */
  narInfoServed(result: Served, status: Outcome, upstream?: string): void;
  /** A NAR request answered from storage (hit) or from a download (miss). */
  narServed(result: Served, status: Outcome, upstream?: string): void;
  /** One narinfo request to one upstream. `result`: found, missing or error. */
  upstreamNarInfoFetch(upstream: string, seconds: number, result: string): void;
  /** One NAR download from an upstream, ended: its duration, the bytes received, how it ended. */
  upstreamNarFetch(upstream: string, seconds: number, bytes: number, result: "verified" | "failed"): void;
  /** A NAR whose bytes were not what its narinfo said; `reason` is a fixed word. */
  verificationFailed(reason: string): void;
  /** A NAR streamed from the replica downloading it, ended: the bytes received, how it ended. */
  replicaRelay(bytes: number, result: "verified" | "failed"): void;
  /** A narinfo lookup answered from the memory of an upstream's recent 404. */
  negativeCacheHit(): void;
  /** A NAR download started, or ended (however). */
  downloadStarted(key: string, size: number | null, progress: () => number): void;
  downloadEnded(key: string): void;
  /** Something an operator should see on the status page (an upstream failing, a bad NAR). */
  noteError(what: string): void;
  /** Spans: the narinfo lookup, each upstream request, the NAR download, the storage commit. */
  startSpan(name: string, attrs?: Attributes, kind?: "internal" | "client"): SpanHandle;
  /** Headers that carry the current trace to an upstream (traceparent), or none. */
  traceHeaders(): Record<string, string>;
}

export interface LockInstruments {
  /** `type`: the lock's kind (its name up to ":"); `mode`: exclusive (the only one today). */
  lockAcquired(type: string, result: "success" | "busy" | "failure", mode: string): void;
  lockHeld(type: string, seconds: number, mode: string): void;
  lockFailed(type: string, mode: string): void;
  /** Locks left Redis for in-process ones (true: degraded mode) or came back (false). */
  lockDegraded(degraded: boolean): void;
}

export interface EvictionInstruments {
  /** One LRU pass: how long it took, what it freed. */
  lruCleanup(seconds: number, bytesFreed: number, narInfosEvicted: number, narFilesEvicted: number): void;
}

const noSpan: SpanHandle = {
  setAttributes() {},
  fail() {},
  end() {},
  run: (fn) => fn(),
};

export const noInstruments: Instruments & LockInstruments & EvictionInstruments = {
  narInfoServed() {},
  narServed() {},
  upstreamNarInfoFetch() {},
  upstreamNarFetch() {},
  verificationFailed() {},
  replicaRelay() {},
  negativeCacheHit() {},
  downloadStarted() {},
  downloadEnded() {},
  noteError() {},
  startSpan: () => noSpan,
  traceHeaders: () => ({}),
  lockAcquired() {},
  lockHeld() {},
  lockFailed() {},
  lockDegraded() {},
  lruCleanup() {},
};

/** Runs `fn` in a child span of the current one; ends it, failed when `fn` throws. */
export async function inSpan<T>(
  instruments: Instruments,
  name: string,
  attrs: Attributes,
  fn: (span: SpanHandle) => Promise<T>,
  kind: "internal" | "client" = "internal",
): Promise<T> {
  const span = instruments.startSpan(name, attrs, kind);
  try {
    return await span.run(() => fn(span));
  } catch (err) {
    span.fail(err);
    throw err;
  } finally {
    span.end();
  }
}

/** The hostname label of an upstream URL (Go's `upstream_hostname`). */
export function upstreamHostname(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}
