/** Mutual exclusion by name: in-process (memory.ts) or across replicas (redis.ts). The
 * contract both keep, and the errors they throw. */

/** How long withLock waits for a held lock unless told, in every backend (then
 * LockTimeoutError, a 503): a waiter never waits forever, in-process or through Redis. */
export const DEFAULT_WAIT_MS = 30_000;

/** The lock was not obtained within `waitMs` (HTTP 503: busy, try again). */
export class LockTimeoutError extends Error {
  override name = "LockTimeoutError";
  constructor(
    readonly lockName: string,
    readonly waitMs: number,
  ) {
    super(`timed out after ${waitMs} ms waiting for lock ${JSON.stringify(lockName)}`);
  }
}

/** The locker was closed (shutting down) before or while the lock was asked for (HTTP 503). */
export class LockerClosedError extends Error {
  override name = "LockerClosedError";
  constructor() {
    super("locker is closed");
  }
}

/** Locks are advisory and named by any string; a name's lock is free until someone takes it.
 * Besides LockerClosedError, a backend that cannot be reached (Redis down) throws an Error
 * naming it: that is a fault, never "somebody holds the lock". */
export interface Locker {
  /** Run `fn` while holding the lock `name`, waiting for it at most `waitMs` (default:
   * DEFAULT_WAIT_MS, or what the backend was built with). Resolves or rejects with `fn`'s outcome, and the lock
   * is released either way (a failed release is logged, not thrown: the lease expires). Not
   * reentrant: taking a lock already held by the caller waits for itself. Throws
   * LockTimeoutError (fn never ran) or LockerClosedError (closed before the lock came). */
  withLock<T>(name: string, fn: () => Promise<T>, waitMs?: number): Promise<T>;
  /** Take the lock if free, without waiting: returns its release function, or null when
   * someone holds it. The release function is idempotent and only ever releases this
   * holding (never a later holder's after the lease ran out). `ttlMs` bounds the lease: a
   * holder that never releases (crashed, or forgot) loses the lock after it; Redis renews
   * the lease while the process lives, memory frees it at the ttl. `holder`, when given, is
   * recorded with the holding for `holderOf` to read (a download claim names the replica
   * downloading). Throws LockerClosedError after close. */
  tryLock(name: string, ttlMs?: number, holder?: string): Promise<(() => Promise<void>) | null>;
  /** The `holder` text the current holding of `name` was taken with; null when the lock is
   * free or was taken without one. Only a hint: the holding may end as it is read, and
   * anyone who can write to Redis can write it (check it before acting on it). */
  holderOf(name: string): Promise<string | null>;
  /** Stop: later and still-waiting calls fail with LockerClosedError. Current holders run on
   * (memory frees their locks when they release; Redis stops renewing and leaves the keys to
   * expire after their TTL, as if the process had died). Idempotent. */
  close(): Promise<void>;
}
