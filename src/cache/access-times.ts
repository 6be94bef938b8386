/** Access times are collected in memory and written in one batch per interval: the narinfo
 * hit path must not write to the database. Each is written as when the hit happened (to
 * WRITE_RESOLUTION_MS), not when the batch goes out: written at the flush, a narinfo served
 * 9 s earlier looked newer than one recorded since, and an LRU pass then evicted the new one,
 * whose NAR a client that had just been handed its narinfo then asked for in vain. An
 * eviction pass has the batch written first (Eviction's writeAccessTimes), for the same reason. */
import type { MetadataStore } from "../db/metadata-store.ts";
import type { Broadcast } from "../lock/broadcast.ts";
import type { Logger } from "../telemetry/logger.ts";

/** Hits are written rounded down to this: one write per such slice of the interval that had
 * hits (100 at most per 10 s). Whole seconds were too coarse: a narinfo served 0.9 s after
 * another was stored looked older than it, and went first. */
const WRITE_RESOLUTION_MS = 100;

/** The broadcast message that asks every replica to write its held access times now. Not a
 * store path hash, so the narinfo forgets sharing the channel ignore it. */
const WRITE_NOW = "access-times:write";

/** How long an eviction pass gives the other replicas to write theirs once asked: a batch
 * is one statement per 100 ms slice, written within milliseconds of the message. */
const OTHERS_WRITE_MS = 500;

export class AccessTimes {
  /** hash -> when it was last served (ms) */
  private pending = new Map<string, number>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private broadcast: Broadcast | null = null;

  constructor(
    private readonly db: MetadataStore,
    private readonly logger: Logger,
    intervalMs = 10_000,
  ) {
    this.timer = setInterval(() => void this.flush(), intervalMs);
    this.timer.unref?.();
  }

  /** Replicas sharing `broadcast` write their held access times when any of them asks
   * (writeEverywhere), so a pass on one does not take what another served seconds ago as
   * unused. */
  shareThrough(broadcast: Broadcast) {
    this.broadcast = broadcast;
    broadcast.listen((message) => {
      if (message === WRITE_NOW) void this.flush();
    });
  }

  /** Written here, and the other replicas asked to write theirs and given OTHERS_WRITE_MS
   * (best effort: a replica that does not hear in time is written by its own timer). */
  async writeEverywhere(): Promise<void> {
    if (this.broadcast) this.broadcast.publish(WRITE_NOW);
    await this.flush();
    if (this.broadcast) await Bun.sleep(OTHERS_WRITE_MS);
  }

  record(hash: string) {
    this.pending.set(hash, Date.now());
  }

  /** One write per WRITE_RESOLUTION_MS slice in which hits happened. */
  async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const bySlice = new Map<number, string[]>();
    for (const [hash, at] of this.pending) {
      const slice = at - (at % WRITE_RESOLUTION_MS);
      const hashes = bySlice.get(slice);
      if (hashes) hashes.push(hash);
      else bySlice.set(slice, [hash]);
    }
    this.pending = new Map();
    for (const [slice, hashes] of [...bySlice].sort(([x], [y]) => x - y)) {
      try {
        await this.db.touch(hashes, slice);
      } catch (err) {
        this.logger.warn("recording access times failed", { count: hashes.length, error: err });
      }
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.flush();
  }
}
