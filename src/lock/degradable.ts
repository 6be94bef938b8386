/** `--cache-lock-allow-degraded-mode` (the Go ncps's name): when Redis cannot be reached, at
 * start or later, locks are taken in-process instead of failing the request, with a warning
 * and the ncps_lock_degraded gauge at 1; Redis is probed until it answers again, and locks go
 * back to it from then on.
 *
 * What degraded mode costs: replicas no longer see each other's locks, so each may download
 * a NAR another is downloading (each verifies what it stores, so nothing wrong is recorded)
 * and two eviction passes may run at once. Every lock is also taken in-process, so one
 * taken while Redis was away keeps excluding this process's callers after it is back. */
import { DEFAULT_WAIT_MS, LockerClosedError, LockTimeoutError, type Locker } from "./locker.ts";
import { MemoryLocker } from "./memory.ts";
import type { Logger } from "../telemetry/logger.ts";

/** A Redis locker (one server or a quorum): what degraded mode needs of it. */
export interface ProbedLocker extends Locker {
  /** Resolves when Redis answers; throws one line saying why not. */
  check(): Promise<void>;
}

export interface DegradableOptions {
  logger: Logger;
  /** Told each time locks leave Redis (true) and come back (false). */
  onDegraded?: (degraded: boolean) => void;
  /** How often an unreachable Redis is asked again; default 5 s. */
  probeIntervalMs?: number;
  /** How long withLock waits when not told, in-process and through Redis alike; default
   * DEFAULT_WAIT_MS. */
  defaultWaitMs?: number;
}

const DEFAULT_PROBE_INTERVAL_MS = 5_000;

/** A failure of the backend itself: anything but "busy" and "closed". */
function backendFault(err: unknown): boolean {
  return !(err instanceof LockTimeoutError) && !(err instanceof LockerClosedError);
}

export class DegradableLocker implements Locker {
  private readonly local: MemoryLocker;
  private readonly defaultWaitMs: number;
  private probe: ReturnType<typeof setTimeout> | null = null;
  private closed = false;

  constructor(
    private readonly redis: ProbedLocker,
    private readonly opts: DegradableOptions,
  ) {
    this.defaultWaitMs = opts.defaultWaitMs ?? DEFAULT_WAIT_MS;
    this.local = new MemoryLocker(this.defaultWaitMs);
  }

  /** True while locks are taken in-process. */
  get degraded(): boolean {
    return this.probe !== null;
  }

  /** Start degraded (Redis did not answer at start). */
  startDegraded(reason: string): void {
    this.degrade(reason);
  }

  /** The in-process lock is taken first, in every mode: a lock taken here while Redis was
   * away then still excludes this process's other callers after Redis is back. */
  async withLock<T>(name: string, fn: () => Promise<T>, waitMs = this.defaultWaitMs): Promise<T> {
    // one deadline for both locks, degraded or not
    const deadline = Date.now() + waitMs;
    return this.local.withLock(name, () => this.sharedWithLock(name, fn, deadline, waitMs), waitMs);
  }

  private async sharedWithLock<T>(name: string, fn: () => Promise<T>, deadline: number, waitMs: number): Promise<T> {
    if (this.degraded) return fn();
    let ran = false;
    try {
      return await this.redis.withLock(name, () => ((ran = true), fn()), Math.max(0, deadline - Date.now()));
    } catch (err) {
      if (ran) throw err;
      // Redis was given only what the in-process wait left (down to 0 ms): the caller waited
      // the whole of waitMs, and that is what logs and 503s should say.
      if (err instanceof LockTimeoutError) throw new LockTimeoutError(name, waitMs);
      if (!backendFault(err) || this.closed) throw err;
      this.degrade((err as Error).message);
      return fn();
    }
  }

  async tryLock(name: string, ttlMs?: number, holder?: string): Promise<(() => Promise<void>) | null> {
    const local = await this.local.tryLock(name, ttlMs, holder);
    if (!local || this.degraded) return local;
    let shared: (() => Promise<void>) | null;
    try {
      shared = await this.redis.tryLock(name, ttlMs, holder);
    } catch (err) {
      if (!backendFault(err) || this.closed) {
        await local();
        throw err;
      }
      this.degrade((err as Error).message);
      return local;
    }
    if (!shared) {
      await local();
      return null;
    }
    return async () => {
      await local();
      await shared();
    };
  }

  async holderOf(name: string): Promise<string | null> {
    if (this.degraded) return this.local.holderOf(name);
    try {
      return await this.redis.holderOf(name);
    } catch (err) {
      if (!backendFault(err) || this.closed) throw err;
      this.degrade((err as Error).message);
      return this.local.holderOf(name);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.probe) clearTimeout(this.probe);
    this.probe = null;
    await Promise.all([this.redis.close(), this.local.close()]);
  }

  private degrade(reason: string): void {
    if (this.degraded || this.closed) return;
    this.opts.logger.warn("redis unreachable: taking locks in this process only until it answers (--cache-lock-allow-degraded-mode)", { reason });
    this.opts.onDegraded?.(true);
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    this.probe = setTimeout(() => void this.runProbe(), this.opts.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS);
    this.probe.unref?.();
  }

  private async runProbe(): Promise<void> {
    try {
      await this.redis.check();
    } catch {
      if (!this.closed) this.scheduleProbe();
      return;
    }
    if (this.closed) return;
    this.probe = null;
    this.opts.logger.info("redis answers again: locks are shared through it again");
    this.opts.onDegraded?.(false);
  }
}
