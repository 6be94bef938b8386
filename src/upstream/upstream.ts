/** One upstream binary cache: where it is, how to reach it, and whether it is answering. */
import { parseCacheInfo } from "../nix/cache-info.ts";
import { NixFormatError } from "../nix/errors.ts";
import { parseNarInfo, type NarInfo } from "../nix/narinfo.ts";
import { readLimited, TooLargeError } from "../streams.ts";
import { inSpan, noInstruments, type Instruments } from "../telemetry/instruments.ts";
import type { Logger } from "../telemetry/logger.ts";

/** An error lookup names its `reason` from a small fixed set (the pool logs each upstream and
 * reason at most once a minute); `detail` says what exactly happened. */
export type NarInfoLookup =
  | { kind: "found"; narinfo: NarInfo }
  | { kind: "missing" }
  | { kind: "error"; reason: string; detail?: string };

export interface UpstreamOptions {
  /** connect + response headers, in ms; for a small document (narinfo, nix-cache-info,
   * which the pool waits for) also its whole body */
  headerTimeoutMs: number;
  /** `Authorization` header (from netrc) */
  authorization?: string;
  /** Origins besides the upstream's own from which NARs and redirect targets are fetched
   * (a cache keeping its NARs on a CDN), e.g. "https://cdn.example.org". */
  extraOrigins?: string[];
  logger: Logger;
  /** a span per request (its traceparent sent along), narinfo fetch durations */
  instruments?: Instruments;
}

/** A narinfo is a few hundred bytes; more is not a narinfo (an HTML page, a misrouted NAR). */
const SMALL_DOCUMENT_BYTES = 1024 * 1024;

/** Consecutive failures after which an upstream is skipped for a while. */
const FAILURES_BEFORE_DOWN = 3;
const DOWN_FOR_MS = 30_000;

/** Redirects followed per request; each must stay within the allowed origins. */
const MAX_REDIRECTS = 3;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

export class UpstreamError extends Error {
  override name = "UpstreamError";
}

/** An allowed NAR origin as configured ("https://cdn.example.org"): http or https, no path. */
export function parseOrigin(text: string): string {
  const url = new URL(text);
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`${text}: use an http or https origin`);
  if (url.pathname !== "/" || url.search !== "") throw new Error(`${text}: an origin has no path (scheme://host[:port])`);
  return url.origin;
}

export class Upstream {
  readonly base: URL;
  /** Lower is preferred, as in nix-cache-info; ties keep the configured order. */
  priority: number;
  private consecutiveFailures = 0;
  private downUntil = 0;
  private readonly origins: Set<string>;
  private readonly instruments: Instruments;

  constructor(
    url: string,
    readonly order: number,
    private readonly opts: UpstreamOptions,
  ) {
    this.base = new URL(url.endsWith("/") ? url : url + "/");
    this.priority = 50; // Nix's default for a cache whose nix-cache-info names none
    this.origins = new Set([this.base.origin, ...(opts.extraOrigins ?? []).map(parseOrigin)]);
    this.instruments = opts.instruments ?? noInstruments;
  }

  get url(): string {
    return this.base.href.replace(/\/$/, "");
  }

  /** Up, or down long enough that the next request is a probe. */
  get available(): boolean {
    return Date.now() >= this.downUntil;
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
    if (!this.opts.authorization || new URL(url).origin !== this.base.origin) return {};
    return { authorization: this.opts.authorization };
  }

  private noteSuccess() {
    this.consecutiveFailures = 0;
    this.downUntil = 0;
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
  private send(url: string, signal: AbortSignal | undefined, due: AbortSignal): Promise<Response> {
    return inSpan(this.instruments, "ncps.upstream.request", { "url.full": url, "ncps.upstream": this.base.host }, async (span) => {
      const res = await this.sendUntraced(url, signal, due);
      span.setAttributes({ "http.response.status_code": res.status });
      return res;
    }, "client");
  }

  /** GET `url`, aborted by `signal` (the caller's) or `due` (our deadline, which aborts the
   * body too when it fires while the body is read). */
  private async sendUntraced(url: string, signal: AbortSignal | undefined, due: AbortSignal): Promise<Response> {
    const combined = signal ? AbortSignal.any([signal, due]) : due;
    try {
      const res = await this.followAllowedRedirects(url, combined);
      if (res.status >= 500) this.noteFailure(`HTTP ${res.status}`);
      else this.noteSuccess();
      return res;
    } catch (err) {
      if (signal?.aborted) throw err; // cancelled by us: says nothing about the upstream
      if (err instanceof UpstreamError && !due.aborted) throw err; // refused by us: not a sign of being down
      const reason = due.aborted ? `no answer within ${this.opts.headerTimeoutMs} ms` : String((err as Error).message ?? err);
      this.noteFailure(reason);
      throw new UpstreamError(`${this.url}: ${reason}`);
    }
  }

  /** fetch() follows redirects anywhere: here each hop must stay within allows(), so an
   * upstream's redirect cannot make ncps relay another host's answer. */
  private async followAllowedRedirects(url: string, signal: AbortSignal): Promise<Response> {
    let current = url;
    for (let hop = 0; ; hop++) {
      if (!this.allows(current)) throw new UpstreamError(`${this.url}: ${current} is not on the upstream's origin or an allowed NAR origin`);
      const res = await fetch(current, { headers: { ...this.headers(current), ...this.instruments.traceHeaders() }, signal, redirect: "manual" });
      const location = res.headers.get("location");
      if (!REDIRECT_STATUSES.has(res.status) || location === null) return res;
      await res.body?.cancel().catch(() => {});
      if (hop >= MAX_REDIRECTS) throw new UpstreamError(`${this.url}: more than ${MAX_REDIRECTS} redirects for ${url}`);
      current = new URL(location, current).href;
    }
  }

  /** A small document (narinfo, nix-cache-info): status and body, bounded in size, and in
   * time as a whole (headers and body) by aborting the request itself. */
  private async getSmall(url: string, signal?: AbortSignal): Promise<{ status: number; text: string }> {
    const due = new AbortController();
    const timer = setTimeout(() => due.abort(), this.opts.headerTimeoutMs);
    try {
      const res = await this.send(url, signal, due.signal);
      if (res.status !== 200 || !res.body) {
        await res.body?.cancel().catch(() => {});
        return { status: res.status, text: "" };
      }
      try {
        return { status: 200, text: await readLimited(res.body, SMALL_DOCUMENT_BYTES) };
      } catch (err) {
        if (signal?.aborted || err instanceof TooLargeError) throw err;
        const reason = due.signal.aborted ? `body not complete within ${this.opts.headerTimeoutMs} ms` : `reading body: ${(err as Error).message ?? err}`;
        this.noteFailure(reason);
        throw new UpstreamError(`${this.url}: ${reason}`);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  async fetchNarInfo(hash: string, signal?: AbortSignal): Promise<NarInfoLookup> {
    const startedAt = performance.now();
    const lookup = await this.lookUpNarInfo(hash, signal);
    this.instruments.upstreamNarInfoFetch(this.base.host, (performance.now() - startedAt) / 1000, lookup.kind);
    if (lookup.kind === "error") this.instruments.noteError(`${this.url}: narinfo ${lookup.reason}`);
    return lookup;
  }

  private async lookUpNarInfo(hash: string, signal?: AbortSignal): Promise<NarInfoLookup> {
    let res: { status: number; text: string };
    try {
      res = await this.getSmall(this.resolve(`${hash}.narinfo`), signal);
    } catch (err) {
      const detail = (err as Error).message ?? String(err);
      if (err instanceof TooLargeError) return { kind: "error", reason: "narinfo too large", detail };
      return { kind: "error", reason: "request failed", detail };
    }
    if (res.status === 404 || res.status === 403 || res.status === 410) return { kind: "missing" };
    if (res.status !== 200) return { kind: "error", reason: `HTTP ${res.status}` };
    try {
      return { kind: "found", narinfo: parseNarInfo(res.text) };
    } catch (err) {
      if (err instanceof NixFormatError) return { kind: "error", reason: "malformed narinfo", detail: err.message };
      throw err;
    }
  }

  /** Learn the upstream's own Priority. Failures are ignored: the configured order stands. */
  async refreshCacheInfo(): Promise<void> {
    try {
      const res = await this.getSmall(this.resolve("nix-cache-info"));
      if (res.status !== 200) return;
      const info = parseCacheInfo(res.text);
      if (info.priority !== undefined) this.priority = info.priority;
    } catch {
      // unreachable at start is allowed; lookups will find out
    }
  }
}
