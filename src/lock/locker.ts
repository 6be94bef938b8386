/** Mutual exclusion by name: in-process (memory.ts) or across replicas (redis.ts). */
export interface Locker {
  /** Run `fn` while holding the lock `name`; waits for the lock at most `waitMs`. */
  withLock<T>(name: string, fn: () => Promise<T>, waitMs?: number): Promise<T>;
  /** Take the lock if free; returns a release function, or null when someone holds it. */
  tryLock(name: string, ttlMs?: number): Promise<(() => Promise<void>) | null>;
  close(): Promise<void>;
}
