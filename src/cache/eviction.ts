/** LRU eviction: keeps the stored NARs under `--cache-max-size`. A pass starts when a commit
 * pushes the stored total over the cap (StoredNars' after-record hook) or on the schedule,
 * never two at a time (in-process, and across replicas through the "lru" lock). It walks the
 * narinfos least recently used first, skips the closures of pins and NARs being downloaded,
 * and removes each narinfo through StoredNars (its NAR goes with the last narinfo naming
 * it) until the total is down to the low-water mark.
 *
 * A client may be streaming a NAR while it is evicted: the records go first, so no new
 * reader finds the NAR, and the bytes `graceMs` later. A reader that already looked the NAR up
 * has opened it by then (local storage: Bun's sendfile opens the file when it starts sending,
 * and an open file survives its unlink; S3: a GET in progress streams the object it started
 * on). Deletions still pending at close are done then; a crash leaves them as stray blobs,
 * which fsck removes. The chunks of an evicted chunked NAR that no other NAR holds are
 * swept at once (chunk-store.ts): a client streaming that NAR may then see its transfer
 * aborted, and Nix's retry fetches the NAR again. */
import type { MetadataStore, NarInfoAge } from "../db/metadata-store.ts";
import type { Locker } from "../lock/locker.ts";
import { MemoryLocker } from "../lock/memory.ts";
import type { Logger } from "../telemetry/logger.ts";
import { pinnedClosure } from "./pins.ts";
import type { StoredNars } from "./stored-nars.ts";

export interface EvictionOptions {
  db: MetadataStore;
  nars: StoredNars;
  /** a download of this NAR is running (its narinfo must stay for it to be recorded) */
  isDownloading(narKey: string): boolean;
  /** Writes the access times held in memory (AccessTimes): a pass ordering by the written
   * ones only would take a narinfo just handed to a client for unused, and evict the NAR
   * that client asks for next. */
  writeAccessTimes?(): Promise<void>;
  /** the cap, in bytes (> 0) */
  maxBytes: number;
  /** one pass across replicas; a MemoryLocker of its own when absent */
  locker?: Locker;
  /** how long the "lru" lock outlives a replica that died holding it */
  lockTtlMs: number;
  logger: Logger;
  /** delay between removing a NAR's record and its bytes (default 10 s) */
  graceMs?: number;
  /** narinfos read per page (default 1,000) */
  pageSize?: number;
  /** narinfos removed per batch (a few statements each; default: defaultBatchSize) */
  batchSize?: number;
}

export type PassReason = "schedule" | "cap" | "start" | "manual";

export interface PassResult {
  reason: PassReason;
  /** the stored total when the pass began and when it ended */
  before: number;
  after: number;
  freedBytes: number;
  narInfos: number;
  nars: number;
  /** narinfos left because they belong to a pinned closure / their NAR is downloading */
  skippedPinned: number;
  skippedDownloading: number;
  durationMs: number;
}

/** Evict down to this share of the cap, not just under it: stopping at the cap itself would
 * start a new pass (a pinned-closure walk and an LRU scan) on nearly every commit once the
 * cache is full. 10% of room costs a tenth of the cache's hit rate at most, and makes passes
 * rare: the next starts after that many bytes of new NARs. */
export const LOW_WATER = 0.9;
const DEFAULT_GRACE_MS = 10_000;
/** Narinfos removed per batch, with a yield to the event loop after each. A batch is a few
 * statements whatever its size (one round trip each on a server engine); on SQLite it runs
 * synchronously, so requests wait behind it. Measured with bench/eviction.ts (a pass evicting
 * 100,000 of 1,000,000 NARs while 16 connections hit narinfos): on SQLite, batches of 100
 * took the pass 33 s with hits at p50 20 ms / p99 150 ms; batches of 25, 40 s at 6 / 97 ms.
 * On PostgreSQL, batches of 100 left hits at their idle latency (README). */
export function defaultBatchSize(dialect: MetadataStore["dialect"]): number {
  return dialect === "sqlite" ? 25 : 100;
}
const LOCK_NAME = "lru";

const yieldToEventLoop = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

export class Eviction {
  private readonly locker: Locker;
  private readonly ownLocker: boolean;
  private readonly graceMs: number;
  private readonly pageSize: number;
  private readonly batchSize: number;
  private running: Promise<PassResult | null> | null = null;
  /** the cap was passed again while a pass ran: check once more when it ends */
  private recheck = false;
  private closed = false;
  /** NAR bytes whose records are gone, by when they are due (the grace ended), oldest first;
   * deleted one at a time by one queue, so a pass of 100,000 NARs does not start 100,000
   * deletions at once */
  private readonly pendingBytes = new Map<string, number>();
  private drainTimer: ReturnType<typeof setTimeout> | null = null;
  private draining: Promise<void> | null = null;
  /** cap checks under way (one may start a pass) */
  private readonly checks = new Set<Promise<void>>();

  constructor(private readonly opts: EvictionOptions) {
    if (!(opts.maxBytes > 0)) throw new Error("eviction needs a cap greater than 0");
    this.ownLocker = opts.locker === undefined;
    this.locker = opts.locker ?? new MemoryLocker();
    this.graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
    this.pageSize = opts.pageSize ?? 1000;
    this.batchSize = opts.batchSize ?? defaultBatchSize(opts.db.dialect);
  }

  get maxBytes(): number {
    return this.opts.maxBytes;
  }

  /** A pass starts when the stored total is over the cap (StoredNars' after-record hook, and
   * at start). While one runs, the total is checked again when it ends. */
  checkCap(reason: PassReason = "cap"): void {
    if (this.closed) return;
    if (this.running) {
      this.recheck = true;
      return;
    }
    const check = this.startIfOverCap(reason).finally(() => this.checks.delete(check));
    this.checks.add(check);
  }

  /** Start a pass unless one is running (its result is returned then). Null when another
   * replica holds the lock, or after close. Never rejects: a failed pass is logged. */
  trigger(reason: PassReason): Promise<PassResult | null> {
    if (this.closed) return Promise.resolve(null);
    if (this.running) return this.running;
    const pass = this.lockedPass(reason)
      .catch((error: unknown) => {
        this.opts.logger.error("LRU eviction pass failed", { reason, error });
        return null;
      })
      .finally(() => {
        this.running = null;
        if (this.recheck) {
          this.recheck = false;
          this.checkCap("cap");
        }
      });
    this.running = pass;
    return pass;
  }

  /** Waits for the running pass, then deletes the pending bytes at once. */
  async close(): Promise<void> {
    await Promise.all([...this.checks]); // a commit just before close may have passed the cap
    this.closed = true;
    await this.running;
    await this.flushPendingDeletions();
    if (this.ownLocker) await this.locker.close();
  }

  /** Deletes the bytes of evicted NARs now, without waiting for their grace to end. */
  async flushPendingDeletions(): Promise<void> {
    await this.drain(Number.POSITIVE_INFINITY);
  }

  /** Evicted NARs whose bytes are still in storage, waiting for their grace to end. */
  get pendingDeletions(): number {
    return this.pendingBytes.size;
  }

  private async startIfOverCap(reason: PassReason): Promise<void> {
    try {
      if ((await this.opts.db.storedBytes()) > this.opts.maxBytes) await this.trigger(reason);
    } catch (error) {
      this.opts.logger.error("reading the stored total failed", { error });
    }
  }

  private async lockedPass(reason: PassReason): Promise<PassResult | null> {
    const release = await this.locker.tryLock(LOCK_NAME, this.opts.lockTtlMs);
    if (!release) {
      this.opts.logger.debug("LRU eviction: another replica is running a pass", { reason });
      return null;
    }
    try {
      return await this.pass(reason);
    } finally {
      await release();
    }
  }

  private async pass(reason: PassReason): Promise<PassResult> {
    const { db, logger, maxBytes } = this.opts;
    const started = performance.now();
    const before = await db.storedBytes();
    const result: PassResult = { reason, before, after: before, freedBytes: 0, narInfos: 0, nars: 0, skippedPinned: 0, skippedDownloading: 0, durationMs: 0 };
    if (before <= maxBytes) {
      result.durationMs = Math.round(performance.now() - started);
      logger.debug("LRU eviction: under the cap", { reason, storedBytes: before, maxBytes });
      return result;
    }
    const target = Math.floor(maxBytes * LOW_WATER);
    const pinned = await pinnedClosure(db); // once per pass: a pin added meanwhile waits for the next
    await this.opts.writeAccessTimes?.();
    let stored = before;
    let cursor: NarInfoAge | undefined;
    walk: for (;;) {
      const page = await db.narInfosByAge(this.pageSize, cursor);
      if (page.length === 0) break;
      cursor = page.at(-1);
      let batch: NarInfoAge[] = [];
      let declared = 0;
      for (const [i, n] of page.entries()) {
        if (pinned.has(n.hash)) result.skippedPinned++;
        else if (this.opts.isDownloading(n.narKey)) result.skippedDownloading++;
        else {
          batch.push(n);
          declared += n.size;
        }
        // a batch ends where its declared sizes would reach the target (a shared NAR frees
        // less, so this never overshoots by more than one NAR), at the batch size, or with the page
        if (batch.length > 0 && (stored - declared <= target || batch.length >= this.batchSize || i === page.length - 1)) {
          stored = await this.removeBatch(batch, result);
          batch = [];
          declared = 0;
          await yieldToEventLoop();
          if (stored <= target) break walk;
        }
      }
    }
    result.after = await db.storedBytes();
    result.durationMs = Math.round(performance.now() - started);
    const fields = { ...result, maxBytes, targetBytes: target };
    if (result.after > maxBytes) logger.warn("LRU eviction pass ended over the cap: the rest is pinned or downloading", fields);
    else logger.info("LRU eviction pass", fields);
    return result;
  }

  /** Returns the stored total after it (commits meanwhile count too: the figure decides). */
  private async removeBatch(batch: NarInfoAge[], result: PassResult): Promise<number> {
    const removed = await this.opts.nars.removeNarInfosKeepingBytes(batch);
    result.narInfos += removed.narInfos;
    for (const nar of removed.nars) {
      result.nars++;
      result.freedBytes += nar.size;
      if (!nar.chunked) this.deleteBytesLater(nar.key);
    }
    // A chunked NAR frees only the chunks no other NAR holds: swept now, so the figure that
    // decides whether to go on counts them (chunks a commit reserved within the grace stay)
    if (removed.nars.some((n) => n.chunked)) result.freedBytes += (await this.opts.nars.chunks.sweep()).bytes;
    return this.opts.db.storedBytes();
  }

  private deleteBytesLater(key: string): void {
    this.pendingBytes.delete(key); // evicted again: due later, at the end of the queue
    this.pendingBytes.set(key, Date.now() + this.graceMs);
    this.scheduleDrain();
  }

  private scheduleDrain(): void {
    if (this.drainTimer || this.draining || this.pendingBytes.size === 0) return;
    const [, due] = this.pendingBytes.entries().next().value!;
    this.drainTimer = setTimeout(() => {
      this.drainTimer = null;
      void this.drain(Date.now());
    }, Math.max(0, due - Date.now()));
    this.drainTimer.unref?.();
  }

  /** Deletes the bytes due by `until`, one NAR at a time, then waits for the next. */
  private drain(until: number): Promise<void> {
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = null;
    const previous = this.draining ?? Promise.resolve();
    const run = previous.then(async () => {
      for (const [key, due] of this.pendingBytes) {
        if (due > until) break;
        this.pendingBytes.delete(key);
        await this.deleteBytes(key);
      }
    });
    const tracked = run.finally(() => {
      if (this.draining === tracked) this.draining = null;
      this.scheduleDrain();
    });
    this.draining = tracked;
    return tracked;
  }

  /** Unless the NAR was recorded again or is being downloaded again meanwhile (the download
   * overwrites the bytes). */
  private async deleteBytes(key: string): Promise<void> {
    if (this.opts.isDownloading(key)) return;
    try {
      await this.opts.nars.discardUnrecorded(key);
    } catch (error) {
      this.opts.logger.error("deleting evicted NAR bytes failed", { key, error });
    }
  }
}
