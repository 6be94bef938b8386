/** In-process Locker: one FIFO mutex per name. Waiters are served in arrival order and a
 * released lock passes straight to the next waiter, so nobody can barge in ahead. */
import { DEFAULT_WAIT_MS, LockerClosedError, LockTimeoutError, type Locker } from "./locker.ts";

interface Waiter {
  grant(holder: Holder): void;
  fail(err: Error): void;
}

/** One holding of a lock; `release` is idempotent and only ever releases this holding. */
interface Holder {
  released: boolean;
  note?: string;
  ttlTimer: ReturnType<typeof setTimeout> | null;
}

interface LockState {
  holder: Holder;
  waiters: Waiter[];
}

export class MemoryLocker implements Locker {
  private readonly locks = new Map<string, LockState>();
  private closed = false;

  /** `defaultWaitMs`: how long withLock waits when not told. */
  constructor(private readonly defaultWaitMs = DEFAULT_WAIT_MS) {}

  async withLock<T>(name: string, fn: () => Promise<T>, waitMs = this.defaultWaitMs): Promise<T> {
    const holder = await this.acquire(name, waitMs);
    try {
      return await fn();
    } finally {
      this.release(name, holder);
    }
  }

  /** `ttlMs` releases the lock by itself after that long (as a Redis lock expires), in case
   * the holder never calls release. */
  async tryLock(name: string, ttlMs?: number, note?: string): Promise<(() => Promise<void>) | null> {
    if (this.closed) throw new LockerClosedError();
    if (this.locks.has(name)) return null;
    const holder = this.take(name);
    holder.note = note;
    if (ttlMs !== undefined) {
      holder.ttlTimer = setTimeout(() => this.release(name, holder), ttlMs);
      holder.ttlTimer.unref?.();
    }
    return async () => this.release(name, holder);
  }

  async holderOf(name: string): Promise<string | null> {
    return this.locks.get(name)?.holder.note ?? null;
  }

  /** Waiters still queued fail with LockerClosedError; current holders finish normally. */
  async close(): Promise<void> {
    this.closed = true;
    for (const state of this.locks.values()) {
      for (const waiter of state.waiters.splice(0)) waiter.fail(new LockerClosedError());
    }
  }

  private acquire(name: string, waitMs: number): Promise<Holder> {
    if (this.closed) return Promise.reject(new LockerClosedError());
    const state = this.locks.get(name);
    if (!state) return Promise.resolve(this.take(name));
    return new Promise<Holder>((resolve, reject) => {
      const waiter: Waiter = {
        grant: (holder) => {
          clearTimeout(timer);
          resolve(holder);
        },
        fail: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      state.waiters.push(waiter);
      const timer = setTimeout(() => {
        const i = state.waiters.indexOf(waiter);
        if (i !== -1) state.waiters.splice(i, 1);
        reject(new LockTimeoutError(name, waitMs));
      }, waitMs);
    });
  }

  private take(name: string): Holder {
    const holder: Holder = { released: false, ttlTimer: null };
    this.locks.set(name, { holder, waiters: [] });
    return holder;
  }

  private release(name: string, holder: Holder): void {
    if (holder.released) return;
    holder.released = true;
    if (holder.ttlTimer) clearTimeout(holder.ttlTimer);
    const state = this.locks.get(name);
    if (!state || state.holder !== holder) return;
    const next = state.waiters.shift();
    if (!next) {
      this.locks.delete(name);
      return;
    }
    // hand over directly: the lock never looks free to a newcomer in between
    const nextHolder: Holder = { released: false, ttlTimer: null };
    state.holder = nextHolder;
    next.grant(nextHolder);
  }
}
