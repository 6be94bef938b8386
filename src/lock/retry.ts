/** withLock for a backend whose tryLock never waits (Redis, one node or a quorum): tryLock
 * again with jittered exponential backoff until it succeeds or `waitMs` runs out. */
import { LockTimeoutError, type Locker } from "./locker.ts";

const FIRST_RETRY_MS = 20;
const MAX_RETRY_MS = 1_000;

/** Take `name` (LockTimeoutError after `waitMs`), run `fn`, release whatever happens; a failed
 * release goes to `releaseFailed`, never hiding fn's outcome (the lease expires anyway). */
export async function withLockByTrying<T>(
  locker: Pick<Locker, "tryLock">,
  name: string,
  fn: () => Promise<T>,
  waitMs: number,
  releaseFailed: (err: unknown) => void,
): Promise<T> {
  const deadline = Date.now() + waitMs;
  let backoff = FIRST_RETRY_MS;
  let release: (() => Promise<void>) | null;
  while (!(release = await locker.tryLock(name))) {
    const left = deadline - Date.now();
    if (left <= 0) throw new LockTimeoutError(name, waitMs);
    // full jitter keeps waiting replicas from retrying in lockstep
    await Bun.sleep(Math.min(left, Math.random() * backoff));
    backoff = Math.min(backoff * 2, MAX_RETRY_MS);
  }
  try {
    return await fn();
  } finally {
    await release().catch(releaseFailed);
  }
}
