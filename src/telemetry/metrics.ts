/** The one set of instruments, through @opentelemetry/api: every exporter (Prometheus at
 * /metrics, OTLP) reads the same ones, and the status page reads the same tallies, so no two
 * of them disagree. Counters are plain numbers kept here and reported through observable
 * instruments when an exporter collects: the hot path pays a Map lookup and an addition, not
 * an SDK call. Histograms are bucket counts kept here too (histograms.ts), handed to the
 * exporters as finished data when they collect. Names follow the Go ncps's, so its
 * dashboards keep working; the `ncps_*_bytes_*`, download, verification, negative-cache,
 * upload and delete series are ours. */
import type { Attributes as OtelAttributes, Meter, ObservableResult, Tracer } from "@opentelemetry/api";
import { context, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { BucketHistogram } from "./histograms.ts";
import { sampleRequest, sampleRoot, type TraceSampling } from "./sampling.ts";
import { noInstruments, upstreamHostname, type Attributes, type EvictionInstruments, type Instruments, type LockInstruments, type Outcome, type Served, type SpanHandle } from "./instruments.ts";

/** A counter by label set, read at collection time. */
class Tally {
  private readonly entries = new Map<string, { attrs: OtelAttributes; value: number }>();

  add(key: string, attrs: () => OtelAttributes, n = 1) {
    const entry = this.entries.get(key);
    if (entry) entry.value += n;
    else this.entries.set(key, { attrs: attrs(), value: n });
  }

  observe = (result: ObservableResult) => {
    for (const { attrs, value } of this.entries.values()) result.observe(value, attrs);
  };

  /** The sum over label sets that `match`. */
  sum(match: (attrs: OtelAttributes) => boolean = () => true): number {
    let total = 0;
    for (const { attrs, value } of this.entries.values()) if (match(attrs)) total += value;
    return total;
  }

  byLabel(label: string): Map<string, number> {
    const out = new Map<string, number>();
    for (const { attrs, value } of this.entries.values()) {
      const k = String(attrs[label] ?? "");
      out.set(k, (out.get(k) ?? 0) + value);
    }
    return out;
  }
}

/** Seconds: 0.5 ms (a narinfo hit) to 5 minutes (a large NAR). */
const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export interface UpstreamState {
  url: string;
  healthy: boolean;
}

/** What the gauges read, set by the composition root once the parts exist. */
export interface GaugeSources {
  upstreams(): UpstreamState[];
  storedBytes(): Promise<number>;
  storedCounts(): Promise<{ narInfos: number; nars: number }>;
  /** Bytes the stored NARs may take; absent: no cap. */
  maxSizeBytes?: number;
}

export interface RecentError {
  at: string;
  what: string;
}

export interface DownloadProgress {
  key: string;
  size: number | null;
  received: number;
  startedAt: number;
}

function secondsHistogram(name: string, description: string): BucketHistogram {
  return new BucketHistogram(name, description, "s", SECONDS_BUCKETS);
}

const RECENT_ERRORS = 20;
/** Stored size is a database query: at most once per this period, whoever asks. */
const STORED_BYTES_TTL_MS = 5_000;
/** Counting rows reads a whole index: at most once per this period. */
const STORED_COUNTS_TTL_MS = 30_000;

const propagator = new W3CTraceContextPropagator();

export class Telemetry implements Instruments, LockInstruments, EvictionInstruments {
  readonly requests = new Tally();
  readonly narInfos = new Tally();
  readonly nars = new Tally();
  readonly bytesServed = new Tally();
  readonly bytesFetched = new Tally();
  readonly verificationFailures = new Tally();
  readonly replicaRelays = new Tally();
  readonly replicaBytes = new Tally();
  readonly negativeHits = new Tally();
  readonly writes = new Tally();
  readonly lockAcquisitions = new Tally();
  readonly lockFailures = new Tally();
  readonly lru = { runs: new Tally(), bytes: new Tally(), narInfos: new Tally(), nars: new Tally() };
  /** Upstream narinfo latency, for the status page: last and moving average, seconds. */
  readonly upstreamLatency = new Map<string, { last: number; average: number; count: number }>();
  readonly downloads = new Map<string, { size: number | null; progress: () => number; startedAt: number }>();
  readonly recentErrors: RecentError[] = [];
  activeRequests = 0;
  /** Locks are in-process because Redis does not answer (--cache-lock-allow-degraded-mode). */
  lockDegradedNow = false;
  private sources: GaugeSources | null = null;
  readonly storedBytes = this.fromSources(STORED_BYTES_TTL_MS, (s) => s.storedBytes(), 0);
  readonly storedCounts = this.fromSources(STORED_COUNTS_TTL_MS, (s) => s.storedCounts(), { narInfos: 0, nars: 0 });
  private readonly requestDuration = secondsHistogram("http_server_request_duration_seconds", "HTTP request duration (to the last byte sent)");
  private readonly narInfoFetchDuration = secondsHistogram("ncps_upstream_narinfo_fetch_duration_seconds", "One narinfo request to one upstream");
  private readonly narFetchDuration = secondsHistogram("ncps_upstream_nar_fetch_duration_seconds", "One NAR download from an upstream, start to verified (or failed)");
  private readonly lockHold = secondsHistogram("ncps_lock_hold_duration_seconds", "How long a lock was held");
  private readonly lruDuration = secondsHistogram("ncps_lru_cleanup_duration_seconds", "One LRU eviction pass");
  /** for the exporters (a metric producer) */
  readonly histograms: readonly BucketHistogram[] = [this.requestDuration, this.narInfoFetchDuration, this.narFetchDuration, this.lockHold, this.lruDuration];
  private readonly requestAttrs = new Map<string, OtelAttributes>();

  constructor(
    meter: Meter,
    private readonly tracer: Tracer | null,
    private readonly sampling: TraceSampling = { rootRatio: 1, followParent: true },
  ) {
    const counter = (name: string, description: string, tally: Tally, unit?: string) =>
      meter.createObservableCounter(name, { description, unit }).addCallback(tally.observe);
    const gauge = (name: string, description: string, read: (r: ObservableResult) => void | Promise<void>, unit?: string) =>
      meter.createObservableGauge(name, { description, unit }).addCallback(read);

    counter("http_server_requests", "HTTP requests answered, by route, method and status", this.requests);
    meter.createObservableUpDownCounter("http_server_active_requests", { description: "HTTP requests in progress" }).addCallback((r) => r.observe(this.activeRequests));
    counter("ncps_narinfo_served", "narinfo requests answered, by result (hit, miss) and status", this.narInfos);
    counter("ncps_nar_served", "NAR requests answered, by result (hit, miss) and status", this.nars);
    counter("ncps_bytes_served", "Response body bytes sent to clients, by route", this.bytesServed, "By");
    counter("ncps_upstream_bytes_fetched", "NAR bytes received from each upstream", this.bytesFetched, "By");
    counter("ncps_nar_verification_failures", "NARs whose bytes were not what their narinfo said, by reason", this.verificationFailures);
    counter("ncps_replica_relays", "NARs streamed from the replica downloading them, by result (verified, failed)", this.replicaRelays);
    counter("ncps_replica_bytes_fetched", "NAR bytes received from other replicas", this.replicaBytes, "By");
    counter("ncps_upstream_negative_cache_hits", "narinfo lookups answered from the memory of a recent upstream 404", this.negativeHits);
    counter("ncps_writes", "Uploads and deletes accepted, by operation (upload, delete) and kind (narinfo, nar, log)", this.writes);
    gauge("ncps_downloads_in_flight", "NAR downloads running", (r) => r.observe(this.downloads.size));
    gauge("ncps_upstream_count_healthy", "Upstreams answering", (r) => r.observe(this.sources?.upstreams().filter((u) => u.healthy).length ?? 0));
    gauge("ncps_upstream_count_total", "Upstreams configured", (r) => r.observe(this.sources?.upstreams().length ?? 0));
    gauge("ncps_store_total_size_bytes", "Bytes of the stored NARs", async (r) => r.observe(await this.storedBytes()), "By");
    gauge("ncps_narinfo_count", "narinfos stored", async (r) => r.observe((await this.storedCounts()).narInfos));
    gauge("ncps_nar_file_count", "NAR files stored", async (r) => r.observe((await this.storedCounts()).nars));
    gauge("ncps_cache_max_size_bytes", "The cap on stored bytes (0: none)", (r) => r.observe(this.sources?.maxSizeBytes ?? 0), "By");
    gauge("ncps_cache_utilization_ratio", "Stored bytes over the cap (0 without a cap)", async (r) => {
      const max = this.sources?.maxSizeBytes;
      r.observe(max ? (await this.storedBytes()) / max : 0);
    });
    counter("ncps_lock_acquisitions", "Lock requests, by type, result (success, busy, failure) and mode", this.lockAcquisitions);
    counter("ncps_lock_failures", "Lock operations that failed (backend errors)", this.lockFailures);
    gauge("ncps_lock_degraded", "1 while locks are taken in-process because Redis does not answer (--cache-lock-allow-degraded-mode)", (r) => r.observe(this.lockDegradedNow ? 1 : 0));
    counter("ncps_lru_cleanup_runs", "LRU eviction passes", this.lru.runs);
    counter("ncps_lru_bytes_freed", "Bytes freed by LRU eviction", this.lru.bytes, "By");
    counter("ncps_lru_narinfos_evicted", "narinfos removed by LRU eviction", this.lru.narInfos);
    counter("ncps_lru_nar_files_evicted", "NARs removed by LRU eviction", this.lru.nars);
    // Series of rare events exist from the start (at 0), so dashboards and rate() see them
    // before the first one.
    for (const t of [this.lru.runs, this.lru.bytes, this.lru.narInfos, this.lru.nars, this.negativeHits, this.replicaBytes]) t.add("", () => ({}), 0);
    this.lockFailures.add("download exclusive", () => ({ type: "download", mode: "exclusive" }), 0);
    for (const result of ["verified", "failed"]) this.replicaRelays.add(result, () => ({ result }), 0);
  }

  setSources(sources: GaugeSources) {
    this.sources = sources;
  }

  /** A figure the sources give (a database query), asked at most once per `ms` whoever
   * asks; `fallback` before there are sources or when the query fails. */
  private fromSources<T>(ms: number, read: (sources: GaugeSources) => Promise<T>, fallback: T): () => Promise<T> {
    let last: { at: number; value: Promise<T> } | null = null;
    return () => {
      if (!this.sources) return Promise.resolve(fallback);
      const now = Date.now();
      if (!last || now - last.at > ms) last = { at: now, value: read(this.sources).catch(() => fallback) };
      return last.value;
    };
  }

  /** The figures of the status page, from the same tallies the exporters read. */
  async snapshot() {
    const served = (t: Tally) => ({ hits: t.sum((a) => a.result === "hit"), misses: t.sum((a) => a.result === "miss") });
    const fetchedBy = this.bytesFetched.byLabel("upstream_hostname");
    const now = Date.now();
    return {
      narInfos: served(this.narInfos),
      nars: served(this.nars),
      bytesServed: this.bytesServed.sum(),
      narBytesServed: this.bytesServed.sum((a) => a.http_route === "nar"),
      bytesFetched: this.bytesFetched.sum(),
      storedBytes: await this.storedBytes(),
      maxSizeBytes: this.sources?.maxSizeBytes || null,
      upstreams: (this.sources?.upstreams() ?? []).map((u) => {
        const host = upstreamHostname(u.url);
        const latency = this.upstreamLatency.get(host);
        return { url: u.url, healthy: u.healthy, latencyMs: latency ? latency.average * 1000 : null, bytesFetched: fetchedBy.get(host) ?? 0 };
      }),
      downloads: [...this.downloads].map(([key, d]) => ({ key, size: d.size, received: d.progress(), seconds: (now - d.startedAt) / 1000 })),
      recentErrors: [...this.recentErrors],
    };
  }

  // -- HTTP (called by the server's request observer) --

  requestStarted() {
    this.activeRequests++;
  }

  requestFinished(route: string, method: string, status: number, seconds: number, bytes: number) {
    this.activeRequests--;
    const key = `${route} ${method} ${status}`;
    let attrs = this.requestAttrs.get(key);
    if (!attrs) {
      attrs = { http_route: route, http_request_method: method, http_response_status_code: status };
      this.requestAttrs.set(key, attrs);
    }
    const labels = attrs;
    this.requests.add(key, () => labels);
    this.requestDuration.record(seconds, key, () => labels);
    if (bytes > 0) this.bytesServed.add(route, () => ({ http_route: route }), bytes);
    if (status >= 500) this.noteError(`${method} ${route}: HTTP ${status}`);
    if (status < 300 && (method === "PUT" || method === "DELETE") && (route === "narinfo" || route === "nar" || route === "log")) {
      const operation = method === "PUT" ? "upload" : "delete";
      this.writes.add(`${operation} ${route}`, () => ({ operation, kind: route }));
    }
  }

  // -- Instruments (the domain) --

  narInfoServed(result: Served, status: Outcome, upstream = "") {
    this.narInfos.add(`${result} ${status} ${upstream}`, () => ({ result, status, upstream_hostname: upstream }));
  }

  narServed(result: Served, status: Outcome, upstream = "") {
    this.nars.add(`${result} ${status} ${upstream}`, () => ({ result, status, upstream_hostname: upstream }));
  }

  upstreamNarInfoFetch(upstream: string, seconds: number, result: string) {
    this.narInfoFetchDuration.record(seconds, `${upstream} ${result}`, () => ({ upstream_hostname: upstream, result }));
    const l = this.upstreamLatency.get(upstream) ?? { last: 0, average: 0, count: 0 };
    l.last = seconds;
    l.count++;
    l.average += (seconds - l.average) / Math.min(l.count, 20); // about the last 20
    this.upstreamLatency.set(upstream, l);
  }

  upstreamNarFetch(upstream: string, seconds: number, bytes: number, result: "verified" | "failed") {
    this.narFetchDuration.record(seconds, `${upstream} ${result}`, () => ({ upstream_hostname: upstream, result }));
    this.bytesFetched.add(upstream, () => ({ upstream_hostname: upstream }), bytes);
  }

  verificationFailed(reason: string) {
    this.verificationFailures.add(reason, () => ({ reason }));
  }

  replicaRelay(bytes: number, result: "verified" | "failed") {
    this.replicaRelays.add(result, () => ({ result }));
    this.replicaBytes.add("", () => ({}), bytes);
  }

  negativeCacheHit() {
    this.negativeHits.add("", () => ({}));
  }

  downloadStarted(key: string, size: number | null, progress: () => number) {
    this.downloads.set(key, { size, progress, startedAt: Date.now() });
  }

  downloadEnded(key: string) {
    this.downloads.delete(key);
  }

  noteError(what: string) {
    this.recentErrors.unshift({ at: new Date().toISOString(), what: what.slice(0, 300) });
    if (this.recentErrors.length > RECENT_ERRORS) this.recentErrors.length = RECENT_ERRORS;
  }

  lockAcquired(type: string, result: "success" | "busy" | "failure", mode: string) {
    this.lockAcquisitions.add(`${type} ${result} ${mode}`, () => ({ type, result, mode }));
  }

  lockHeld(type: string, seconds: number, mode: string) {
    this.lockHold.record(seconds, `${type} ${mode}`, () => ({ type, mode }));
  }

  lockFailed(type: string, mode: string) {
    this.lockFailures.add(`${type} ${mode}`, () => ({ type, mode }));
  }

  lockDegraded(degraded: boolean) {
    this.lockDegradedNow = degraded;
  }

  lruCleanup(seconds: number, bytesFreed: number, narInfosEvicted: number, narFilesEvicted: number) {
    this.lruDuration.record(seconds);
    this.lru.runs.add("", () => ({}));
    this.lru.bytes.add("", () => ({}), bytesFreed);
    this.lru.narInfos.add("", () => ({}), narInfosEvicted);
    this.lru.nars.add("", () => ({}), narFilesEvicted);
  }

  // -- Tracing --

  startSpan(name: string, attrs?: Attributes, kind: "internal" | "client" = "internal"): SpanHandle {
    if (!this.tracer) return noInstruments.startSpan(name);
    // Inside a traced request the span is its child; work outside any starts a trace of its
    // own, sampled like a request without a parent.
    if (!trace.getSpan(context.active())?.isRecording() && !sampleRoot(this.sampling)) return noInstruments.startSpan(name);
    const span = this.tracer.startSpan(name, { attributes: attrs, kind: kind === "client" ? SpanKind.CLIENT : SpanKind.INTERNAL });
    const ctx = trace.setSpan(context.active(), span);
    return {
      setAttributes: (a) => void span.setAttributes(a),
      fail: (error) => {
        span.recordException(error instanceof Error ? error : String(error));
        span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
      },
      end: () => span.end(),
      run: (fn) => context.with(ctx, fn),
    };
  }

  traceHeaders(): Record<string, string> {
    if (!this.tracer) return {};
    const headers: Record<string, string> = {};
    propagator.inject(context.active(), headers, { set: (carrier, key, value) => void ((carrier as Record<string, string>)[key] = value) });
    return headers;
  }

  /** The server span of one request, continuing the caller's `traceparent` when there is one. */
  startRequestSpan(method: string, headers: Headers, attributes: () => Attributes): SpanHandle | null {
    // A request left out costs a header read and a random number (sampling.ts): no span, no
    // context, no async-context switch on the hit path; the spans a miss starts then become
    // traces of their own, sampled alike. Attributes are worked out only for a span that records.
    if (!this.tracer || !sampleRequest(this.sampling, headers.get("traceparent"))) return null;
    const parent = propagator.extract(context.active(), headers, { get: (h, key) => (h as Headers).get(key) ?? undefined, keys: () => [] });
    const span = this.tracer.startSpan(`${method}`, { kind: SpanKind.SERVER, attributes: { "http.request.method": method, ...attributes() } }, parent);
    const ctx = trace.setSpan(parent, span);
    return {
      setAttributes: (a) => void span.setAttributes(a),
      fail: (error) => span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) }),
      end: () => span.end(),
      run: (fn) => context.with(ctx, fn),
    };
  }
}

