/** One upstream binary cache: where it is, how to reach it, and whether it is answering. */
import { declaredLength } from "../content-length.ts";
import { parseCacheInfo } from "../nix/cache-info.ts";
import { NixFormatError } from "../nix/errors.ts";
import { parseNarInfo, type NarInfo } from "../nix/narinfo.ts";
import { readBytesLimited, TooLargeError } from "../streams.ts";
import { inSpan, noInstruments, type Instruments } from "../telemetry/instruments.ts";
import type { Logger } from "../telemetry/logger.ts";
import { basicAuthorization } from "./netrc.ts";
import { displayProxy, sender, type Send } from "./proxy.ts";
import { parseUpstreamUrl, sameUpstream, upstreamIdentity } from "./upstream-url.ts";

/** An error lookup names its `reason` from a small fixed set (the pool logs each upstream and
 * reason at most once a minute); `detail` says what exactly happened. */
export type Lookup<T> = { kind: "found"; value: T } | { kind: "missing" } | { kind: "error"; reason: string; detail?: string };
export type NarInfoLookup = Lookup<NarInfo>;

type Method = "GET" | "HEAD";

/** A document's answer: its status, headers and body (empty for HEAD). */
interface DocumentAnswer {
  status: number;
  headers: Headers;
  body: Uint8Array;
}

export interface UpstreamOptions {
  /** connect + response headers, in ms; for a document (narinfo, nix-cache-info, build log,
   * which a request waits for whole) also its whole body */
  headerTimeoutMs: number;
  /** `Authorization` header (from netrc); wins over a user and password in the URL */
  authorization?: string;
  /** Origins besides the upstream's own from which NARs and redirect targets are fetched
   * (a cache keeping its NARs on a CDN), e.g. "https://cdn.example.org". */
  extraOrigins?: string[];
  /** Use its narinfos and realisations without a trusted signature (--cache-upstream-accept-unsigned). */
  acceptUnsigned?: boolean;
  /** Every request for this upstream (narinfos, NARs, logs, health checks, redirects) goes
   * through it (--cache-upstream-proxy); without it, fetch's own (HTTP_PROXY, HTTPS_PROXY). */
  proxy?: URL;
  logger: Logger;
  /** a span per request (its traceparent sent along), narinfo fetch durations */
  instruments?: Instruments;
}

/** A narinfo is a few hundred bytes; more is not a narinfo (an HTML page, a misrouted NAR). */
const SMALL_DOCUMENT_BYTES = 1024 * 1024;
/** A build log is relayed whole or not at all (a status, not a body cut short), so it is held
 * in memory: a large build's log runs to a few MB, rarely tens. */
const MAX_LOG_BYTES = 64 * 1024 * 1024;

/** Consecutive failures after which an upstream is skipped for a while. */
const FAILURES_BEFORE_DOWN = 3;
const DOWN_FOR_MS = 30_000;

/** A narinfo request that meets a transient failure (a reset connection, 502, 503, 504) is
 * tried again this many times, after 100 ms, then 200 ms (the Go ncps: 3 tries from 100 ms),
 * before the lookup counts it as failed and the next upstream is asked. */
const TRANSIENT_RETRIES = 2;
const RETRY_BACKOFF_MS = 100;
const TRANSIENT_STATUSES = new Set([502, 503, 504]);

/** Redirects followed per request; each must stay within the allowed origins. */
const MAX_REDIRECTS = 3;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

export class UpstreamError extends Error {
  override name = "UpstreamError";
  constructor(
    message: string,
    /** the connection broke (reset, closed early): worth one more try */
    readonly transient = false,
    /** a failure of the upstream that the request was asked not to count (it may be
     * retried): the caller counts it if it gives up */
    readonly uncountedFailure?: string,
  ) {
    super(message);
  }
}

/** A connection that broke under a request, as opposed to one refused or timed out. */
function isBrokenConnection(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (code === "ECONNRESET" || code === "EPIPE" || code === "ConnectionClosed" || code === "UND_ERR_SOCKET") return true;
  return /reset|closed unexpectedly|broken pipe|socket hang up/i.test(String((err as Error)?.message ?? err));
}

/** `ms`, or less when `signal` aborts; its listener goes either way (the signal may be a
 * caller's that outlives many lookups). */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const end = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", end);
      resolve();
    };
    const timer = setTimeout(end, ms);
    signal?.addEventListener("abort", end, { once: true });
  });
}

/** An allowed NAR origin as configured ("https://cdn.example.org"): http or https, no path. */
export function parseOrigin(text: string): string {
  const url = new URL(text);
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`${text}: use an http or https origin`);
  if (url.pathname !== "/" || url.search !== "") throw new Error(`${text}: an origin has no path (scheme://host[:port])`);
  return url.origin;
}

/** A document found, parsed: a NixFormatError is the upstream's garbage, an error lookup. */
function parsed<T>(lookup: Lookup<string>, parse: (text: string) => T, malformed: string): Lookup<T> {
  if (lookup.kind !== "found") return lookup;
  try {
    return { kind: "found", value: parse(lookup.value) };
  } catch (err) {
    if (err instanceof NixFormatError) return { kind: "error", reason: malformed, detail: err.message };
    throw err;
  }
}

export class Upstream {
  /** Without the user and password the configured URL may hold: `url`, made from it, is in
   * logs, errors, the status page and the database. */
  readonly base: URL;
  /** Its name in logs and in the narinfo rows it fills (upstreamIdentity). */
  readonly url: string;
  private readonly authorization: string | undefined;
  /** Lower is preferred, as in nix-cache-info; ties keep the configured order. */
  priority: number;
  /** Given as `?priority=N` in the configured URL: nix-cache-info does not change it. */
  private readonly fixedPriority: boolean;
  readonly acceptsUnsigned: boolean;
  /** What the last health check (or request) found; a failed check takes the upstream out
   * of lookups until one answers again. */
  private healthy = true;
  private consecutiveFailures = 0;
  private downUntil = 0;
  private readonly origins: Set<string>;
  private readonly instruments: Instruments;
  private readonly sendOne: Send;

  constructor(
    url: string,
    readonly order: number,
    private readonly opts: UpstreamOptions,
  ) {
    const parsed = parseUpstreamUrl(url);
    this.url = upstreamIdentity(url);
    this.base = new URL(`${parsed.url}/`);
    // sent as HTTP Basic, as fetch would send them from the URL (to this origin only)
    const fromUrl = this.base.username || this.base.password ? basicAuthorization(decodeURIComponent(this.base.username), decodeURIComponent(this.base.password)) : undefined;
    this.authorization = opts.authorization ?? fromUrl;
    this.base.username = "";
    this.base.password = "";
    this.fixedPriority = parsed.priority !== undefined;
    this.priority = parsed.priority ?? 50; // Nix's default for a cache whose nix-cache-info names none
    this.acceptsUnsigned = opts.acceptUnsigned ?? false;
    this.origins = new Set([this.base.origin, ...(opts.extraOrigins ?? []).map(parseOrigin)]);
    this.instruments = opts.instruments ?? noInstruments;
    this.sendOne = sender(opts.proxy);
  }

  /** The proxy requests go through, fit to show (no credentials); null when direct. */
  get proxy(): string | null {
    return this.opts.proxy ? displayProxy(this.opts.proxy) : null;
  }

  /** Whether `recorded` (a database row's upstream) is this upstream. */
  is(recorded: string | null): boolean {
    return sameUpstream(recorded, this.url);
  }

  /** Healthy, and not down after failed requests (or down long enough that the next
   * request is a probe). */
  get available(): boolean {
    return this.healthy && Date.now() >= this.downUntil;
  }

  resolve(relative: string): string {
    return new URL(relative, this.base).href;
  }

  /** Whether ncps may fetch `url` for this upstream: its own origin or an allowed one. A
   * narinfo's URL is not covered by its signature, so it may name any host (an internal
   * service): only these are ever asked. */
  allows(url: string): boolean {
    try {
      return this.origins.has(new URL(url).origin);
    } catch {
      return false;
    }
  }

  /** Credentials go to this upstream's own origin only, never to a host a narinfo names. */
  private headers(url: string): Record<string, string> {
    if (!this.authorization || new URL(url).origin !== this.base.origin) return {};
    return { authorization: this.authorization };
  }

  private noteSuccess() {
    this.consecutiveFailures = 0;
    this.downUntil = 0;
    this.noteHealth(true, "answered");
  }

  private noteHealth(healthy: boolean, reason: string) {
    if (healthy === this.healthy) return;
    this.healthy = healthy;
    if (healthy) this.opts.logger.info("upstream is back", { upstream: this.url });
    else this.opts.logger.warn("upstream failed its health check: skipped until it answers", { upstream: this.url, reason });
  }

  private noteFailure(reason: string) {
    this.consecutiveFailures++;
    if (this.consecutiveFailures >= FAILURES_BEFORE_DOWN) {
      if (this.available) this.opts.logger.warn("upstream marked down", { upstream: this.url, reason });
      this.downUntil = Date.now() + DOWN_FOR_MS;
    }
  }

  /** GET; the timeout covers connecting and the response headers only, never the body (a
   * large NAR takes as long as it takes; NarDownload watches for stalls and slowness). */
  async get(url: string, signal?: AbortSignal): Promise<Response> {
    const due = new AbortController();
    const timer = setTimeout(() => due.abort(), this.opts.headerTimeoutMs);
    try {
      return await this.send(url, signal, due.signal);
    } finally {
      clearTimeout(timer);
    }
  }

  /** One upstream request in its own client span, which the upstream sees as the parent of
   * its work (traceparent); the span ends with the response headers. */
  private send(url: string, signal: AbortSignal | undefined, due: AbortSignal, countFailure = true, method: Method = "GET"): Promise<Response> {
    return inSpan(this.instruments, "ncps.upstream.request", { "url.full": url, "ncps.upstream": this.base.host }, async (span) => {
      const res = await this.sendUntraced(url, signal, due, countFailure, method);
      span.setAttributes({ "http.response.status_code": res.status });
      return res;
    }, "client");
  }

  /** GET (or HEAD) `url`, aborted by `signal` (the caller's) or `due` (our deadline, which
   * aborts the body too when it fires while the body is read). */
  private async sendUntraced(url: string, signal: AbortSignal | undefined, due: AbortSignal, countFailure: boolean, method: Method): Promise<Response> {
    const combined = signal ? AbortSignal.any([signal, due]) : due;
    try {
      const res = await this.followAllowedRedirects(url, combined, method);
      if (res.status < 500) this.noteSuccess();
      else if (countFailure) this.noteFailure(`HTTP ${res.status}`);
      return res;
    } catch (err) {
      if (signal?.aborted) throw err; // cancelled by us: says nothing about the upstream
      if (err instanceof UpstreamError && !due.aborted) throw err; // refused by us: not a sign of being down
      const reason = due.aborted ? `no answer within ${this.opts.headerTimeoutMs} ms` : String((err as Error).message ?? err);
      if (countFailure) this.noteFailure(reason);
      throw new UpstreamError(`${this.url}: ${reason}`, !due.aborted && isBrokenConnection(err), countFailure ? undefined : reason);
    }
  }

  /** fetch() follows redirects anywhere: here each hop must stay within allows(), so an
   * upstream's redirect cannot make ncps relay another host's answer. */
  private async followAllowedRedirects(url: string, signal: AbortSignal, method: Method): Promise<Response> {
    let current = url;
    for (let hop = 0; ; hop++) {
      if (!this.allows(current)) throw new UpstreamError(`${this.url}: ${current} is not on the upstream's origin or an allowed NAR origin`);
      const res = await this.sendOne(current, { method, headers: { ...this.headers(current), ...this.instruments.traceHeaders() }, signal });
      const location = res.headers.get("location");
      if (!REDIRECT_STATUSES.has(res.status) || location === null) return res;
      await res.body?.cancel().catch(() => {});
      if (hop >= MAX_REDIRECTS) throw new UpstreamError(`${this.url}: more than ${MAX_REDIRECTS} redirects for ${url}`);
      current = new URL(location, current).href;
    }
  }

  /** A document (narinfo, nix-cache-info, build log): status and body, bounded in size
   * (`maxBytes`), and in time as a whole (headers and body) by aborting the request itself. */
  private async getBounded(url: string, maxBytes: number, signal?: AbortSignal, countFailure = true, method: Method = "GET"): Promise<DocumentAnswer> {
    const due = new AbortController();
    const timer = setTimeout(() => due.abort(), this.opts.headerTimeoutMs);
    try {
      const res = await this.send(url, signal, due.signal, countFailure, method);
      if (res.status !== 200 || !res.body || method === "HEAD") {
        await res.body?.cancel().catch(() => {});
        return { status: res.status, headers: res.headers, body: new Uint8Array() };
      }
      try {
        return { status: 200, headers: res.headers, body: await readBytesLimited(res.body, maxBytes) };
      } catch (err) {
        if (signal?.aborted || err instanceof TooLargeError) throw err;
        const reason = due.signal.aborted ? `body not complete within ${this.opts.headerTimeoutMs} ms` : `reading body: ${(err as Error).message ?? err}`;
        if (countFailure) this.noteFailure(reason);
        throw new UpstreamError(`${this.url}: ${reason}`, !due.signal.aborted && isBrokenConnection(err), countFailure ? undefined : reason);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  async fetchNarInfo(hash: string, signal?: AbortSignal): Promise<NarInfoLookup> {
    const startedAt = performance.now();
    const lookup = parsed(await this.lookUpText(`${hash}.narinfo`, signal), parseNarInfo, "malformed narinfo");
    this.instruments.upstreamNarInfoFetch(this.base.host, (performance.now() - startedAt) / 1000, lookup.kind);
    if (lookup.kind === "error") this.instruments.noteError(`${this.url}: narinfo ${lookup.reason}`);
    return lookup;
  }

  /** A small document other than a narinfo (a realisation), by its path under the
   * upstream: with the narinfo's retries, deadline and size bound, parsed by `parse`. */
  async fetchDocument<T>(path: string, parse: (text: string) => T, signal?: AbortSignal): Promise<Lookup<T>> {
    const lookup = parsed(await this.lookUpText(path, signal), parse, "malformed document");
    if (lookup.kind === "error") this.instruments.noteError(`${this.url}: ${path}: ${lookup.reason}`);
    return lookup;
  }

  /** A build log (`log/<drv>`), as bytes: with the narinfo's retries and deadline (headers
   * and body), bounded in size. */
  async fetchLog(path: string, signal?: AbortSignal): Promise<Lookup<Uint8Array>> {
    const lookup = await this.lookUpDocument(path, MAX_LOG_BYTES, signal);
    if (lookup.kind === "error") this.instruments.noteError(`${this.url}: ${path}: ${lookup.reason}`);
    return lookup.kind === "found" ? { kind: "found", value: lookup.value.body } : lookup;
  }

  /** Whether the upstream has a build log, and its declared length (null: none declared),
   * asked with HEAD: a HEAD from a client costs no log download. A log declared longer than
   * fetchLog takes is the same error as fetchLog's, so HEAD and GET agree. */
  async headLog(path: string, signal?: AbortSignal): Promise<Lookup<number | null>> {
    const answer = await this.lookUpDocument(path, 0, signal, "HEAD");
    let lookup: Lookup<number | null> = answer.kind === "found" ? { kind: "found", value: declaredLength(answer.value.headers) } : answer;
    if (lookup.kind === "found" && lookup.value !== null && lookup.value > MAX_LOG_BYTES) {
      lookup = { kind: "error", reason: "document too large", detail: `${path}: ${lookup.value} bytes declared, more than ${MAX_LOG_BYTES}` };
    }
    if (lookup.kind === "error") this.instruments.noteError(`${this.url}: ${path}: ${lookup.reason}`);
    return lookup;
  }

  private async lookUpText(path: string, signal?: AbortSignal): Promise<Lookup<string>> {
    const lookup = await this.lookUpDocument(path, SMALL_DOCUMENT_BYTES, signal);
    return lookup.kind === "found" ? { kind: "found", value: new TextDecoder().decode(lookup.value.body) } : lookup;
  }

  private async lookUpDocument(path: string, maxBytes: number, signal?: AbortSignal, method: Method = "GET"): Promise<Lookup<DocumentAnswer>> {
    let res: DocumentAnswer;
    for (let attempt = 0; ; attempt++) {
      const last = attempt >= TRANSIENT_RETRIES;
      try {
        // a failure that will be retried does not count towards marking the upstream down
        res = await this.getBounded(this.resolve(path), maxBytes, signal, last, method);
      } catch (err) {
        if (!last && err instanceof UpstreamError && err.transient && !signal?.aborted) {
          await pause(RETRY_BACKOFF_MS * 2 ** attempt, signal);
          continue;
        }
        if (err instanceof UpstreamError && err.uncountedFailure !== undefined) this.noteFailure(err.uncountedFailure);
        const detail = (err as Error).message ?? String(err);
        if (err instanceof TooLargeError) return { kind: "error", reason: "document too large", detail };
        return { kind: "error", reason: "request failed", detail };
      }
      if (last || !TRANSIENT_STATUSES.has(res.status) || signal?.aborted) {
        if (!last && res.status >= 500) this.noteFailure(`HTTP ${res.status}`);
        break;
      }
      await pause(RETRY_BACKOFF_MS * 2 ** attempt, signal);
    }
    if (res.status === 404 || res.status === 403 || res.status === 410) return { kind: "missing" };
    if (res.status !== 200) return { kind: "error", reason: `HTTP ${res.status}` };
    return { kind: "found", value: res };
  }

  /** The health check: ask for nix-cache-info. An answer below 500 is healthy (and a
   * Priority in it is learnt, unless the URL gave one); no answer, or a 5xx, takes the
   * upstream out of lookups until a later check (or a probe when every upstream is out)
   * gets one. Resolves to whether it is healthy. */
  async checkHealth(): Promise<boolean> {
    try {
      const res = await this.getBounded(this.resolve("nix-cache-info"), SMALL_DOCUMENT_BYTES);
      if (res.status >= 500) {
        this.noteHealth(false, `HTTP ${res.status}`);
        return false;
      }
      this.noteHealth(true, `HTTP ${res.status}`);
      if (res.status === 200 && !this.fixedPriority) {
        const info = parseCacheInfo(new TextDecoder().decode(res.body));
        if (info.priority !== undefined) this.priority = info.priority;
      }
      return true;
    } catch (err) {
      if (err instanceof NixFormatError) return true; // it answered; the configured order stands
      this.noteHealth(false, (err as Error).message ?? String(err));
      return false;
    }
  }
}
