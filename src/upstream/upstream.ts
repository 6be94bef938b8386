/** One upstream binary cache: where it is, how to reach it, and whether it is answering. */
import { parseCacheInfo } from "../nix/cache-info.ts";
import { NixFormatError } from "../nix/errors.ts";
import { parseNarInfo, type NarInfo } from "../nix/narinfo.ts";
import { readLimited } from "../streams.ts";
import type { Logger } from "../telemetry/logger.ts";

export type NarInfoLookup =
  | { kind: "found"; narinfo: NarInfo }
  | { kind: "missing" }
  | { kind: "error"; reason: string };

export interface UpstreamOptions {
  /** connect + response headers, in ms */
  headerTimeoutMs: number;
  /** `Authorization` header (from netrc) */
  authorization?: string;
  logger: Logger;
}

/** A narinfo is a few hundred bytes; more is not a narinfo (an HTML page, a misrouted NAR). */
const SMALL_DOCUMENT_BYTES = 1024 * 1024;

/** Consecutive failures after which an upstream is skipped for a while. */
const FAILURES_BEFORE_DOWN = 3;
const DOWN_FOR_MS = 30_000;

export class UpstreamError extends Error {
  override name = "UpstreamError";
}

export class Upstream {
  readonly base: URL;
  /** Lower is preferred, as in nix-cache-info; ties keep the configured order. */
  priority: number;
  private consecutiveFailures = 0;
  private downUntil = 0;

  constructor(
    url: string,
    readonly order: number,
    private readonly opts: UpstreamOptions,
  ) {
    this.base = new URL(url.endsWith("/") ? url : url + "/");
    this.priority = 50; // Nix's default for a cache whose nix-cache-info names none
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
   * large NAR takes as long as it takes; NarDownload watches for stalls). */
  async get(url: string, signal?: AbortSignal): Promise<Response> {
    const headersDue = new AbortController();
    const timer = setTimeout(() => headersDue.abort(), this.opts.headerTimeoutMs);
    const combined = signal ? AbortSignal.any([signal, headersDue.signal]) : headersDue.signal;
    try {
      const res = await fetch(url, { headers: this.headers(url), signal: combined, redirect: "follow" });
      if (res.status >= 500) this.noteFailure(`HTTP ${res.status}`);
      else this.noteSuccess();
      return res;
    } catch (err) {
      if (signal?.aborted) throw err; // cancelled by us: says nothing about the upstream
      const reason = headersDue.signal.aborted ? `no answer within ${this.opts.headerTimeoutMs} ms` : String((err as Error).message ?? err);
      this.noteFailure(reason);
      throw new UpstreamError(`${this.url}: ${reason}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** A small document's body (narinfo, nix-cache-info): bounded in size and in time. */
  private async smallText(res: Response): Promise<string> {
    if (!res.body) return "";
    const deadline = setTimeout(() => void res.body?.cancel(new UpstreamError("body too slow")).catch(() => {}), this.opts.headerTimeoutMs);
    try {
      return await readLimited(res.body, SMALL_DOCUMENT_BYTES);
    } finally {
      clearTimeout(deadline);
    }
  }

  async fetchNarInfo(hash: string, signal?: AbortSignal): Promise<NarInfoLookup> {
    let res: Response;
    try {
      res = await this.get(this.resolve(`${hash}.narinfo`), signal);
    } catch (err) {
      return { kind: "error", reason: (err as Error).message };
    }
    if (res.status === 404 || res.status === 403 || res.status === 410) {
      await res.body?.cancel();
      return { kind: "missing" };
    }
    if (res.status !== 200) {
      await res.body?.cancel();
      return { kind: "error", reason: `HTTP ${res.status}` };
    }
    let text: string;
    try {
      text = await this.smallText(res);
    } catch (err) {
      return { kind: "error", reason: `reading narinfo: ${(err as Error).message}` };
    }
    try {
      return { kind: "found", narinfo: parseNarInfo(text) };
    } catch (err) {
      if (err instanceof NixFormatError) return { kind: "error", reason: `malformed narinfo: ${err.message}` };
      throw err;
    }
  }

  /** Learn the upstream's own Priority. Failures are ignored: the configured order stands. */
  async refreshCacheInfo(): Promise<void> {
    try {
      const res = await this.get(this.resolve("nix-cache-info"));
      if (res.status !== 200) return void (await res.body?.cancel());
      const info = parseCacheInfo(await this.smallText(res));
      if (info.priority !== undefined) this.priority = info.priority;
    } catch {
      // unreachable at start is allowed; lookups will find out
    }
  }
}
