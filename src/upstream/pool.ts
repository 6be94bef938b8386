/** The upstreams together: asks them in priority order, overlapping so that one slow or dead
 * upstream does not add its timeout to every miss, and remembers recent misses. */
import { SingleFlight } from "../single-flight.ts";
import { canDecompress, parseCompression, unverifiableCompression } from "../nix/compression.ts";
import { parseNarUrl } from "../nix/nar-url.ts";
import type { NarInfo } from "../nix/narinfo.ts";
import { verifyNarInfo, type PublicKey } from "../nix/signature.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { NarInfoLookup, Upstream } from "./upstream.ts";

export interface PoolOptions {
  trustedKeys: PublicKey[];
  /** how long "no upstream has it" is remembered, ms (0 = not at all) */
  negativeTtlMs: number;
  /** how long to wait for an upstream before also asking the next one, ms */
  hedgeDelayMs?: number;
  /** bzip2, lzip and lz4 narinfos are usable (on FileHash alone); default false */
  acceptUnverifiedCompression?: boolean;
  logger: Logger;
}

export interface Found {
  upstream: Upstream;
  narinfo: NarInfo;
}

const NEGATIVE_CACHE_MAX = 100_000;

export class UpstreamPool {
  private readonly misses = new Map<string, number>(); // hash -> expiry (ms epoch)
  private readonly inFlight = new SingleFlight<string, Found | null>();
  private readonly hedgeDelayMs: number;

  constructor(
    readonly upstreams: Upstream[],
    private readonly opts: PoolOptions,
  ) {
    this.hedgeDelayMs = opts.hedgeDelayMs ?? 250;
  }

  /** Ask every upstream for its nix-cache-info Priority, in the background. */
  refreshPriorities(): Promise<void> {
    return Promise.all(this.upstreams.map((u) => u.refreshCacheInfo())).then(() => {});
  }

  private ordered(): Upstream[] {
    const sorted = [...this.upstreams].sort((a, b) => a.priority - b.priority || a.order - b.order);
    const up = sorted.filter((u) => u.available);
    return up.length > 0 ? up : sorted.slice(0, 1); // all down: probe the best one
  }

  /** The verified narinfo from the best upstream that has it, or null. Concurrent lookups of
   * one hash share one set of upstream requests. */
  lookupNarInfo(hash: string): Promise<Found | null> {
    const expiry = this.misses.get(hash);
    if (expiry !== undefined) {
      if (expiry > Date.now()) return Promise.resolve(null);
      this.misses.delete(hash);
    }
    return this.inFlight.run(hash, () => this.askAll(hash));
  }

  private rememberMiss(hash: string) {
    if (this.opts.negativeTtlMs <= 0) return;
    if (this.misses.size >= NEGATIVE_CACHE_MAX) {
      const oldest = this.misses.keys().next().value;
      if (oldest !== undefined) this.misses.delete(oldest);
    }
    this.misses.set(hash, Date.now() + this.opts.negativeTtlMs);
  }

  forgetMiss(hash: string) {
    this.misses.delete(hash);
  }

  private async askAll(hash: string): Promise<Found | null> {
    const candidates = this.ordered();
    const abort = new AbortController();
    const results: (NarInfoLookup | undefined)[] = candidates.map(() => undefined);
    let wake: () => void = () => {};
    const timers: ReturnType<typeof setTimeout>[] = [];
    let started = 0;
    let firstFoundAt = 0;
    let settled = false;

    const startNext = () => {
      if (settled || started >= candidates.length) return;
      const index = started++;
      const upstream = candidates[index]!;
      upstream
        .fetchNarInfo(hash, abort.signal)
        .then((r) => this.checkSignature(upstream, hash, r))
        .catch((err: unknown): NarInfoLookup => ({ kind: "error", reason: String(err) }))
        .then((r) => {
          results[index] = r;
          if (r.kind === "found" && firstFoundAt === 0) firstFoundAt = Date.now();
          if (r.kind !== "found") startNext(); // no need to wait for the hedge delay
          wake();
        });
      if (started < candidates.length) timers.push(setTimeout(startNext, this.hedgeDelayMs));
    };

    try {
      startNext();
      for (;;) {
        const decision = this.decide(candidates, results, firstFoundAt);
        if (decision !== "wait") {
          if (decision === null && results.every((r) => r?.kind === "missing")) this.rememberMiss(hash);
          return decision;
        }
        // Wait for the next answer, or for the grace period given to higher-priority upstreams.
        await new Promise<void>((resolve) => {
          wake = resolve;
          if (firstFoundAt) timers.push(setTimeout(resolve, this.hedgeDelayMs));
        });
      }
    } finally {
      settled = true;
      for (const t of timers) clearTimeout(t);
      abort.abort();
    }
  }

  /** Best answer so far by priority, "wait" while a better one may still come. */
  private decide(candidates: Upstream[], results: (NarInfoLookup | undefined)[], firstFoundAt: number): Found | null | "wait" {
    const graceOver = firstFoundAt !== 0 && Date.now() - firstFoundAt >= this.hedgeDelayMs;
    let waitingOnBetter = false;
    for (let i = 0; i < candidates.length; i++) {
      const r = results[i];
      if (r === undefined) {
        waitingOnBetter = true;
        continue;
      }
      if (r.kind === "found") {
        if (!waitingOnBetter || graceOver) return { upstream: candidates[i]!, narinfo: r.narinfo };
        return "wait";
      }
    }
    return waitingOnBetter ? "wait" : null;
  }

  /** A narinfo counts as found only if ncps can serve it: it is for the path asked, signed by
   * a trusted key, and names a NAR ncps can fetch and verify. Anything else is absent there,
   * so the next upstream is asked and the client gets a 404, never a 400 or 500 for upstream
   * data. (The signature does not cover URL: it is checked here, not trusted.) */
  private checkSignature(upstream: Upstream, hash: string, r: NarInfoLookup): NarInfoLookup {
    if (r.kind !== "found") return r;
    const problem = this.unusable(upstream, hash, r.narinfo);
    if (problem) {
      this.opts.logger.warn(`upstream narinfo ignored: ${problem}`, { upstream: upstream.url, hash });
      return { kind: "missing" };
    }
    return r;
  }

  private unusable(upstream: Upstream, hash: string, narinfo: NarInfo): string | null {
    if (!narinfo.storePath.includes(`/${hash}-`)) return "it names another store path";
    if (!verifyNarInfo(narinfo, this.opts.trustedKeys)) return "no trusted signature";
    try {
      parseNarUrl(narinfo.url);
      const compression = parseCompression(narinfo.compression);
      const unverifiable = unverifiableCompression(compression, this.opts.acceptUnverifiedCompression ?? false);
      if (unverifiable) return unverifiable;
      if (!canDecompress(compression) && narinfo.fileHash === undefined) return `${compression} NAR without FileHash cannot be verified`;
      const protocol = new URL(upstream.resolve(narinfo.url)).protocol;
      if (protocol !== "http:" && protocol !== "https:") return `NAR URL scheme ${protocol} is not fetched`;
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    }
    return null;
  }
}
