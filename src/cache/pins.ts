/** Pins: an operator names a store path whose whole closure (the path and everything it
 * references, transitively) must stay in the cache. Eviction skips what `pinnedClosure` returns;
 * pinning a path whose closure is not all here fetches the missing narinfos and NARs from the
 * upstreams in the background, so a fleet's next system can be cached before it is deployed.
 * The closure is walked in one place (`closureOf`), for eviction, warming and listing alike. */
import type { MetadataStore, Pin } from "../db/metadata-store.ts";
import { parseNcpsNarRequest } from "../nix/nar-url.ts";
import { isStorePathHash, parseStorePath, parseStorePathBaseName, STORE_DIR } from "../nix/store-path.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { Cache } from "./cache.ts";

export type { Pin };

/** How much of a closure is here: `paths` counts every path known to belong to it (a path
 * whose narinfo is missing hides its own references, so the total can grow while warming). */
export interface ClosurePresence {
  paths: number;
  /** paths with a narinfo recorded */
  narInfos: number;
  /** paths with a narinfo and its NAR stored */
  present: number;
  /** stored bytes of those NARs */
  bytes: number;
  /** NAR bytes the recorded narinfos declare (FileSize, else NarSize) */
  knownBytes: number;
  complete: boolean;
}

export interface PinStatus extends Pin {
  closure: ClosurePresence;
  /** its closure is being fetched from the upstreams now */
  warming: boolean;
}

export interface WarmSummary {
  paths: number;
  /** NARs fetched from the upstreams by this run */
  fetched: number;
  bytes: number;
  /** paths no upstream has (narinfo or NAR), or whose NAR failed to download */
  missing: string[];
}

/** The store path hash named by a store path (`/nix/store/<hash>-<name>`), a base name
 * (`<hash>-<name>`) or a bare hash; the store path too when it was given. */
export function pinTarget(ref: string): { hash: string; storePath: string | null } {
  if (isStorePathHash(ref)) return { hash: ref, storePath: null };
  const parts = ref.startsWith("/") ? parseStorePath(ref) : parseStorePathBaseName(ref);
  return { hash: parts.hashPart, storePath: `${STORE_DIR}/${parts.baseName}` };
}

/** The hash part of a reference (a store path base name); null for one that is malformed. */
function referencedHash(baseName: string): string | null {
  const hash = baseName.slice(0, 32);
  return isStorePathHash(hash) ? hash : null;
}

/** Hashes per referencesOf query: well under every engine's bound on parameters. */
const REFERENCE_BATCH = 500;

/** Every hash reachable from `roots` through the references of recorded narinfos, roots
 * included. A hash with no narinfo recorded is in the set but leads nowhere. */
export async function closureOf(db: Pick<MetadataStore, "referencesOf">, roots: Iterable<string>): Promise<Set<string>> {
  const seen = new Set<string>(roots);
  let frontier = [...seen];
  while (frontier.length > 0) {
    const next: string[] = [];
    for (let i = 0; i < frontier.length; i += REFERENCE_BATCH) {
      const refs = await db.referencesOf(frontier.slice(i, i + REFERENCE_BATCH));
      for (const list of refs.values()) {
        for (const ref of list) {
          const hash = referencedHash(ref);
          if (hash !== null && !seen.has(hash)) {
            seen.add(hash);
            next.push(hash);
          }
        }
      }
    }
    frontier = next;
  }
  return seen;
}

/** The narinfo hashes an eviction pass must keep: the closures of every pin. */
export async function pinnedClosure(db: Pick<MetadataStore, "listPins" | "referencesOf">): Promise<Set<string>> {
  return closureOf(db, (await db.listPins()).map((p) => p.hash));
}

/** Runs `fn` over a queue that `fn` may extend, at most `limit` at a time; resolves once the
 * queue is empty and nothing runs. `fn` must not throw. */
function drainQueue<T>(initial: T[], limit: number, fn: (item: T, push: (item: T) => void) => Promise<void>): Promise<void> {
  const queue = [...initial];
  let active = 0;
  return new Promise((resolve) => {
    const pump = () => {
      while (active < limit && queue.length > 0) {
        active++;
        void fn(queue.shift()!, (item) => queue.push(item)).finally(() => {
          active--;
          pump();
        });
      }
      if (active === 0 && queue.length === 0) resolve();
    };
    pump();
  });
}

/** Lookups per presence count: enough to hide database latency, few enough to leave the
 * connection pool to requests. Measured on a 3,000-path closure (two lookups per path; the
 * walk itself is one referencesOf query per level): 250-300 ms on SQLite, 1.4-1.9 s on a local
 * PostgreSQL, so GET /pins costs about that per pin. */
const PRESENCE_CONCURRENCY = 8;

/** How much of the closure of `root` is here. */
export async function closurePresence(db: Pick<MetadataStore, "referencesOf" | "getNarInfo" | "getNar">, root: string): Promise<ClosurePresence> {
  const hashes = await closureOf(db, [root]);
  const presence: ClosurePresence = { paths: hashes.size, narInfos: 0, present: 0, bytes: 0, knownBytes: 0, complete: false };
  await drainQueue([...hashes], PRESENCE_CONCURRENCY, async (hash) => {
    const narInfo = await db.getNarInfo(hash);
    if (!narInfo) return;
    presence.narInfos++;
    presence.knownBytes += narInfo.fileSize ?? narInfo.narSize;
    const nar = await db.getNar(narInfo.narKey);
    if (!nar) return;
    presence.present++;
    presence.bytes += nar.size;
  });
  presence.complete = presence.present === presence.paths;
  return presence;
}

/** Record a pin from the database alone (the CLI without a server): the store path comes from
 * the recorded narinfo, else from `ref` itself. Null when `ref` is a bare hash ncps has no
 * narinfo for (its store path is unknown). */
export async function recordPin(db: Pick<MetadataStore, "getNarInfo" | "addPin">, ref: string): Promise<{ pin: Pin; added: boolean } | null> {
  const target = pinTarget(ref);
  const storePath = (await db.getNarInfo(target.hash))?.storePath ?? target.storePath;
  if (storePath === null) return null;
  const pin = { hash: target.hash, storePath, createdAt: Date.now() };
  return { pin, added: await db.addPin(pin) };
}

export interface PinsOptions {
  db: MetadataStore;
  cache: Pick<Cache, "narInfo" | "nar">;
  logger: Logger;
  /** paths fetched at once while warming (default 4) */
  concurrency?: number;
  /** a progress line every this many paths (default 100) */
  progressEvery?: number;
}

async function drainBody(body: Blob | ReadableStream<Uint8Array>): Promise<number> {
  if (body instanceof Blob) return body.size; // stored bytes: nothing to fetch
  let bytes = 0;
  for await (const chunk of body) bytes += chunk.length;
  return bytes;
}

export class Pins {
  /** warming runs by root hash: one at a time per root */
  private readonly warming = new Map<string, Promise<WarmSummary>>();
  /** warmIncomplete's look for pins to warm, until it has started them */
  private readonly scans = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly opts: PinsOptions) {}

  /** Pin a path (fetching its narinfo from the upstreams when it is not here) and start
   * warming its closure. Null when no one has the path. */
  async add(ref: string): Promise<{ pin: Pin; added: boolean } | null> {
    const { hash } = pinTarget(ref);
    if ((await this.opts.cache.narInfo(hash)) === null) return null;
    const recorded = await recordPin(this.opts.db, hash);
    if (!recorded) return null; // removed meanwhile
    this.opts.logger.info(recorded.added ? "path pinned" : "path already pinned", { hash, storePath: recorded.pin.storePath });
    void this.warm(hash);
    return recorded;
  }

  /** False when the path was not pinned. Its closure becomes evictable again (unless
   * another pin holds it). */
  async remove(ref: string): Promise<boolean> {
    const { hash } = pinTarget(ref);
    const removed = await this.opts.db.removePin(hash);
    if (removed) this.opts.logger.info("path unpinned", { hash });
    return removed;
  }

  async list(): Promise<PinStatus[]> {
    const pins = await this.opts.db.listPins();
    return Promise.all(
      pins.map(async (pin) => ({ ...pin, closure: await closurePresence(this.opts.db, pin.hash), warming: this.warming.has(pin.hash) })),
    );
  }

  /** Warm every pin whose closure is not all here (at start: pins recorded by `ncps pin add`
   * while no server ran, or closures whose warming an earlier run did not finish). */
  warmIncomplete(): Promise<void> {
    const scan = (async () => {
      for (const pin of await this.opts.db.listPins()) {
        if (!(await closurePresence(this.opts.db, pin.hash)).complete) void this.warm(pin.hash);
      }
    })().finally(() => this.scans.delete(scan));
    this.scans.add(scan);
    return scan;
  }

  /** Fetch whatever of the closure of `root` is not here; joins a run already going. */
  warm(root: string): Promise<WarmSummary> {
    if (this.closed) return Promise.resolve({ paths: 0, fetched: 0, bytes: 0, missing: [] });
    const running = this.warming.get(root);
    if (running) return running;
    const run = this.runWarm(root)
      .catch((error: unknown) => {
        this.opts.logger.error("warming a pinned closure failed", { root, error });
        return { paths: 0, fetched: 0, bytes: 0, missing: [root] };
      })
      .finally(() => this.warming.delete(root));
    this.warming.set(root, run);
    return run;
  }

  /** Wait for every warming run (tests). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.scans]);
    while (this.warming.size > 0) await Promise.all([...this.warming.values()]);
  }

  /** Stop warming: paths being fetched finish, no other starts (a closure can take hours;
   * shutdown should not). The next start warms what is still missing. */
  async close(): Promise<void> {
    this.closed = true;
    await this.drain();
  }

  private async runWarm(root: string): Promise<WarmSummary> {
    const { logger } = this.opts;
    const progressEvery = this.opts.progressEvery ?? 100;
    const summary: WarmSummary = { paths: 0, fetched: 0, bytes: 0, missing: [] };
    const seen = new Set([root]);
    logger.info("warming pinned closure", { root });
    await drainQueue([root], this.opts.concurrency ?? 4, async (hash, push) => {
      if (this.closed) return;
      try {
        const fetched = await this.warmPath(hash, (ref) => {
          if (!seen.has(ref)) {
            seen.add(ref);
            push(ref);
          }
        });
        if (fetched === null) summary.missing.push(hash);
        else if (fetched > 0) {
          summary.fetched++;
          summary.bytes += fetched;
        }
      } catch (error) {
        summary.missing.push(hash);
        logger.warn("pinned closure: path not fetched", { root, hash, error });
      }
      summary.paths++;
      if (summary.paths % progressEvery === 0) {
        logger.info("warming pinned closure", { root, done: summary.paths, known: seen.size, fetched: summary.fetched, bytes: summary.bytes });
      }
    });
    const stillMissing = summary.missing.length;
    logger[stillMissing > 0 ? "warn" : "info"]("pinned closure warmed", {
      root,
      paths: summary.paths,
      fetched: summary.fetched,
      bytes: summary.bytes,
      missing: stillMissing,
      ...(stillMissing > 0 ? { firstMissing: summary.missing.slice(0, 10) } : {}),
    });
    return summary;
  }

  /** One path of a closure: its narinfo (telling `found` its references), then its NAR. The
   * NAR bytes fetched; 0 when it was already stored; null when no upstream has it. */
  private async warmPath(hash: string, found: (hash: string) => void): Promise<number | null> {
    const { db, cache } = this.opts;
    if ((await cache.narInfo(hash)) === null) return null;
    const record = await db.getNarInfo(hash);
    if (!record) return null; // deleted meanwhile
    for (const ref of record.references) {
      const refHash = referencedHash(ref);
      if (refHash !== null && refHash !== hash) found(refHash);
    }
    if (await db.getNar(record.narKey)) return 0;
    const source = await cache.nar(parseNcpsNarRequest(record.narKey), { startDownload: true });
    if (!source) return null;
    return drainBody((await source.open()).body);
  }
}
