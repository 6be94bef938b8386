/** Access times are collected in memory and written in one batch per interval: the narinfo
 * hit path must not write to the database. Each is written as when the hit happened (to the
 * second), not when the batch goes out: written at the flush, a narinfo served 9 s earlier
 * looked newer than one recorded since, and an LRU pass then evicted the new one, whose NAR
 * a client that had just been handed its narinfo then asked for in vain. */
import type { MetadataStore } from "../db/metadata-store.ts";
import type { Logger } from "../telemetry/logger.ts";

export class AccessTimes {
  /** hash -> when it was last served (ms) */
  private pending = new Map<string, number>();
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly db: MetadataStore,
    private readonly logger: Logger,
    intervalMs = 10_000,
  ) {
    this.timer = setInterval(() => void this.flush(), intervalMs);
    this.timer.unref?.();
  }

  record(hash: string) {
    this.pending.set(hash, Date.now());
  }

  /** One write per second in which hits happened (at most one per second of the interval). */
  async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const bySecond = new Map<number, string[]>();
    for (const [hash, at] of this.pending) {
      const second = at - (at % 1000);
      const hashes = bySecond.get(second);
      if (hashes) hashes.push(hash);
      else bySecond.set(second, [hash]);
    }
    this.pending = new Map();
    for (const [second, hashes] of [...bySecond].sort(([x], [y]) => x - y)) {
      try {
        await this.db.touch(hashes, second);
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
