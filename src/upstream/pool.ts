/** The upstreams together: asks them in priority order, overlapping so that one slow or dead
 * upstream does not add its timeout to every miss, and remembers recent misses. */
import { SingleFlight } from "../single-flight.ts";
import { canDecompress, parseCompression, unverifiableCompression } from "../nix/compression.ts";
import { parseNarUrl } from "../nix/nar-url.ts";
import type { NarInfo } from "../nix/narinfo.ts";
import { parseRealisation, realisationPath, trustedRealisationSignatures, type DrvOutput, type Realisation } from "../nix/realisation.ts";
import { verifiedSignerNames, verifyNarInfo, type PublicKey } from "../nix/signature.ts";
import type { Instruments } from "../telemetry/instruments.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { Lookup, NarInfoLookup, Upstream } from "./upstream.ts";

export interface PoolOptions {
  trustedKeys: PublicKey[];
  /** how long "no upstream has it" is remembered, ms (0 = not at all) */
  negativeTtlMs: number;
  /** how many misses each list remembers (narinfos, realisations); default 100,000 */
  negativeCacheMax?: number;
  /** how long to wait for an upstream before also asking the next one, ms */
  hedgeDelayMs?: number;
  /** a shared lookup ends after this long, ms, with the best answer so far (or none), so
   * later requests for the hash never join a lookup that hangs */
  lookupTimeoutMs?: number;
  /** bzip2, lzip and lz4 narinfos are usable (on FileHash alone); default false */
  acceptUnverifiedCompression?: boolean;
  logger: Logger;
  /** counts lookups answered from the negative cache */
  instruments?: Pick<Instruments, "negativeCacheHit">;
}

export interface Found {
  upstream: Upstream;
  narinfo: NarInfo;
}

/** What one upstream had, usable. */
interface Answer<T> {
  upstream: Upstream;
  value: T;
}

const NEGATIVE_CACHE_MAX = 100_000;
/** An upstream whose narinfo named a NAR that failed verification comes last for that hash
 * for this long (its narinfo's unsigned fields lied, or its NAR is broken). */
const DISTRUST_MS = 60 * 60_000;
const DISTRUST_MAX = 10_000;
const HEALTH_CHECK_EVERY_MS = 60_000;
/** A broken upstream is logged once per upstream and reason per this period. */
const PROBLEM_LOG_EVERY_MS = 60_000;

/** Keys no upstream had, each until its expiry; the oldest goes when the list is full. */
class RememberedMisses {
  private readonly expiries = new Map<string, number>(); // key -> expiry (ms epoch)

  constructor(
    private readonly ttlMs: number,
    private readonly max: number,
  ) {}

  has(key: string): boolean {
    const expiry = this.expiries.get(key);
    if (expiry === undefined) return false;
    if (expiry > Date.now()) return true;
    this.expiries.delete(key);
    return false;
  }

  remember(key: string) {
    if (this.ttlMs <= 0) return;
    if (this.expiries.size >= this.max) {
      const oldest = this.expiries.keys().next().value;
      if (oldest !== undefined) this.expiries.delete(oldest);
    }
    this.expiries.set(key, Date.now() + this.ttlMs);
  }

  forget(key: string) {
    this.expiries.delete(key);
  }
}

export class UpstreamPool {
  // One list per kind of lookup: a flood of misses for realisation ids (anyone can ask for
  // any) never pushes remembered narinfo misses out, and a key of one kind never answers for
  // the other.
  private readonly narInfoMisses: RememberedMisses;
  private readonly realisationMisses: RememberedMisses;
  private readonly inFlight = new SingleFlight<string, Answer<unknown> | null>();
  private readonly hedgeDelayMs: number;
  private readonly lookupTimeoutMs: number;
  private readonly distrusted = new Map<string, number>(); // "upstream hash" -> expiry (ms epoch)
  private readonly problemsLogged = new Map<string, number>(); // "upstream reason" -> last logged (ms epoch)

  constructor(
    readonly upstreams: Upstream[],
    private readonly opts: PoolOptions,
  ) {
    this.hedgeDelayMs = opts.hedgeDelayMs ?? 250;
    this.lookupTimeoutMs = opts.lookupTimeoutMs ?? 30_000;
    const max = opts.negativeCacheMax ?? NEGATIVE_CACHE_MAX;
    this.narInfoMisses = new RememberedMisses(opts.negativeTtlMs, max);
    this.realisationMisses = new RememberedMisses(opts.negativeTtlMs, max);
  }

  private healthTimer: ReturnType<typeof setInterval> | undefined;

  /** Check every upstream now (learning their Priority) and then every `intervalMs` (the Go
   * ncps: every minute), so a dead one is skipped without costing a miss its timeout, and
   * comes back when it answers. */
  startHealthChecks(intervalMs = HEALTH_CHECK_EVERY_MS): Promise<void> {
    this.healthTimer ??= setInterval(() => void this.checkHealth(), intervalMs);
    this.healthTimer.unref?.();
    return this.checkHealth();
  }

  /** One health check of every upstream, together. */
  checkHealth(): Promise<void> {
    return Promise.all(this.upstreams.map((u) => u.checkHealth())).then(() => {});
  }

  close() {
    clearInterval(this.healthTimer);
    this.healthTimer = undefined;
  }

  /** Best first: an upstream whose NAR for this hash failed verification goes last. */
  private ordered(hash: string): Upstream[] {
    const now = Date.now();
    const last = (u: Upstream) => ((this.distrusted.get(`${u.url} ${hash}`) ?? 0) > now ? 1 : 0);
    const sorted = [...this.upstreams].sort((a, b) => last(a) - last(b) || a.priority - b.priority || a.order - b.order);
    const up = sorted.filter((u) => u.available);
    return up.length > 0 ? up : sorted.slice(0, 1); // all down: probe the best one
  }

  /** The verified narinfo from the best upstream that has it, or null. Concurrent lookups of
   * one hash share one set of upstream requests. */
  async lookupNarInfo(hash: string): Promise<Found | null> {
    const found = await this.lookup(hash, "narinfo", this.narInfoMisses, (upstream, signal) =>
      upstream.fetchNarInfo(hash, signal).then((r) => this.checkSignature(upstream, hash, r)),
    );
    return found && { upstream: found.upstream, narinfo: found.value };
  }

  /** The realisation from the best upstream that has it with a trusted signature (or from an
   * upstream accepting unsigned ones), keeping only its trusted signatures; or null. Misses
   * are remembered like a narinfo's, in a list of their own. */
  lookupRealisation(id: DrvOutput): Promise<Answer<Realisation> | null> {
    const path = realisationPath(id);
    return this.lookup(path, "realisation", this.realisationMisses, async (upstream, signal) => {
      const r = await upstream.fetchDocument(path, (text) => parseRealisation(text, id), signal);
      if (r.kind !== "found") return r;
      const signatures = trustedRealisationSignatures(r.value, this.opts.trustedKeys);
      if (signatures.length === 0 && !upstream.acceptsUnsigned) {
        this.logProblem(upstream, path, "no trusted signature", undefined, "realisation");
        return { kind: "missing" };
      }
      return { kind: "found", value: { ...r.value, signatures } };
    });
  }

  /** Asks the upstreams for `key` (a narinfo hash, a document path) unless `misses` holds
   * it; concurrent lookups of one key share one set of requests. */
  private lookup<T>(
    key: string,
    what: string,
    misses: RememberedMisses,
    ask: (upstream: Upstream, signal: AbortSignal) => Promise<Lookup<T>>,
  ): Promise<Answer<T> | null> {
    if (misses.has(key)) {
      this.opts.instruments?.negativeCacheHit();
      return Promise.resolve(null);
    }
    return this.inFlight.run(key, () => this.askAll(key, what, misses, ask)) as Promise<Answer<T> | null>;
  }

  /** The next lookup of this narinfo asks the upstreams, whatever they answered before. */
  forgetMiss(hash: string) {
    this.narInfoMisses.forget(hash);
  }

  /** The NAR `upstream`'s narinfo for `hash` named failed verification: ask it for this hash
   * after the others for a while. */
  distrust(upstream: Upstream, hash: string) {
    if (this.distrusted.size >= DISTRUST_MAX) {
      const oldest = this.distrusted.keys().next().value;
      if (oldest !== undefined) this.distrusted.delete(oldest);
    }
    this.distrusted.set(`${upstream.url} ${hash}`, Date.now() + DISTRUST_MS);
    this.forgetMiss(hash);
  }

  /** A broken upstream answers 404 to clients: say so in the log, once per upstream and
   * reason a minute, so a hostile or broken upstream cannot flood the log either. */
  private logProblem(upstream: Upstream, hash: string, reason: string, detail?: string, what = "narinfo") {
    const key = `${upstream.url} ${what} ${reason}`;
    const now = Date.now();
    if (now - (this.problemsLogged.get(key) ?? -Infinity) < PROBLEM_LOG_EVERY_MS) return;
    if (this.problemsLogged.size >= NEGATIVE_CACHE_MAX) this.problemsLogged.clear();
    this.problemsLogged.set(key, now);
    this.opts.logger.warn(`upstream ${what} not usable: ${reason}`, { upstream: upstream.url, hash, detail });
  }

  private async askAll<T>(
    hash: string,
    what: string,
    misses: RememberedMisses,
    ask: (upstream: Upstream, signal: AbortSignal) => Promise<Lookup<T>>,
  ): Promise<Answer<T> | null> {
    const candidates = this.ordered(hash);
    const abort = new AbortController();
    const results: (Lookup<T> | undefined)[] = candidates.map(() => undefined);
    let wake: () => void = () => {};
    const timers: ReturnType<typeof setTimeout>[] = [];
    let started = 0;
    let firstFoundAt = 0;
    let settled = false;

    const startNext = () => {
      if (settled || started >= candidates.length) return;
      const index = started++;
      const upstream = candidates[index]!;
      ask(upstream, abort.signal)
        .catch((err: unknown): Lookup<T> => ({ kind: "error", reason: "lookup failed", detail: String(err) }))
        .then((r) => {
          if (settled) return;
          if (r.kind === "error") this.logProblem(upstream, hash, r.reason, r.detail, what);
          results[index] = r;
          if (r.kind === "found" && firstFoundAt === 0) firstFoundAt = Date.now();
          if (r.kind !== "found") startNext(); // no need to wait for the hedge delay
          wake();
        });
      if (started < candidates.length) timers.push(setTimeout(startNext, this.hedgeDelayMs));
    };

    // The overall deadline: whoever has not answered by then counts as failed.
    timers.push(
      setTimeout(() => {
        for (let i = 0; i < results.length; i++) results[i] ??= { kind: "error", reason: "lookup deadline" };
        started = candidates.length;
        wake();
      }, this.lookupTimeoutMs),
    );
    try {
      startNext();
      for (;;) {
        const decision = this.decide(candidates, results, firstFoundAt);
        if (decision !== "wait") {
          if (decision === null && results.every((r) => r?.kind === "missing")) misses.remember(hash);
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
  private decide<T>(candidates: Upstream[], results: (Lookup<T> | undefined)[], firstFoundAt: number): Answer<T> | null | "wait" {
    const graceOver = firstFoundAt !== 0 && Date.now() - firstFoundAt >= this.hedgeDelayMs;
    let waitingOnBetter = false;
    for (let i = 0; i < candidates.length; i++) {
      const r = results[i];
      if (r === undefined) {
        waitingOnBetter = true;
        continue;
      }
      if (r.kind === "found") {
        if (!waitingOnBetter || graceOver) return { upstream: candidates[i]!, value: r.value };
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
    const problem = this.unusable(upstream, hash, r.value);
    if (problem) {
      this.logProblem(upstream, hash, problem);
      return { kind: "missing" };
    }
    return { kind: "found", value: { ...r.value, sigs: this.trustedSigs(r.value) } };
  }

  /** Only the signatures by trusted keys are kept (and served): junk Sig lines an upstream
   * adds are not ncps's to store or pass on. */
  private trustedSigs(narinfo: NarInfo): string[] {
    return narinfo.sigs.filter((sig) => verifiedSignerNames({ ...narinfo, sigs: [sig] }, this.opts.trustedKeys).length > 0);
  }

  private unusable(upstream: Upstream, hash: string, narinfo: NarInfo): string | null {
    if (!narinfo.storePath.includes(`/${hash}-`)) return "it names another store path";
    // --cache-upstream-accept-unsigned: the NAR is still checked against this narinfo's hashes
    if (!upstream.acceptsUnsigned && !verifyNarInfo(narinfo, this.opts.trustedKeys)) return "no trusted signature";
    try {
      parseNarUrl(narinfo.url);
      const compression = parseCompression(narinfo.compression);
      const unverifiable = unverifiableCompression(compression, this.opts.acceptUnverifiedCompression ?? false);
      if (unverifiable) return unverifiable;
      if (!canDecompress(compression) && narinfo.fileHash === undefined) return `${compression} NAR without FileHash cannot be verified`;
      if (!upstream.allows(upstream.resolve(narinfo.url))) return "NAR URL is not on the upstream's origin or an allowed NAR origin";
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    }
    return null;
  }
}
