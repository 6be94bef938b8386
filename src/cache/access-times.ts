/** Access times are collected in memory and written in one batch per interval: the narinfo
 * hit path must not write to the database. */
import type { MetadataStore } from "../db/metadata-store.ts";
import type { Logger } from "../telemetry/logger.ts";

export class AccessTimes {
  private pending = new Set<string>();
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
    this.pending.add(hash);
  }

  async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const batch = [...this.pending];
    this.pending = new Set();
    try {
      await this.db.touch(batch, Date.now());
    } catch (err) {
      this.logger.warn("recording access times failed", { count: batch.length, error: err });
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.flush();
  }
}
