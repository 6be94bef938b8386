/** Any Locker, counted: acquisitions by type (the lock name up to its first ":", e.g.
 * "download"), result and mode, hold durations, and backend failures (Redis unreachable).
 * The composition root wraps the chosen backend in it; the backends know nothing of it. */
import type { LockInstruments } from "../telemetry/instruments.ts";
import { LockerClosedError, LockTimeoutError, type Locker } from "./locker.ts";

const MODE = "exclusive"; // the only kind of lock ncps takes

const lockType = (name: string) => {
  const colon = name.indexOf(":");
  return colon < 0 ? name : name.slice(0, colon);
};

export function instrumentedLocker(locker: Locker, m: LockInstruments): Locker {
  const failed = (type: string, err: unknown) => {
    if (err instanceof LockerClosedError) return;
    m.lockAcquired(type, "failure", MODE);
    m.lockFailed(type, MODE);
  };
  return {
    async withLock(name, fn, waitMs) {
      const type = lockType(name);
      let heldSince = 0;
      try {
        return await locker.withLock(
          name,
          () => {
            heldSince = performance.now();
            m.lockAcquired(type, "success", MODE);
            return fn();
          },
          waitMs,
        );
      } catch (err) {
        if (heldSince === 0) {
          if (err instanceof LockTimeoutError) m.lockAcquired(type, "busy", MODE);
          else failed(type, err);
        }
        throw err;
      } finally {
        if (heldSince !== 0) m.lockHeld(type, (performance.now() - heldSince) / 1000, MODE);
      }
    },
    async tryLock(name, ttlMs, holder) {
      const type = lockType(name);
      let release: (() => Promise<void>) | null;
      try {
        release = await locker.tryLock(name, ttlMs, holder);
      } catch (err) {
        failed(type, err);
        throw err;
      }
      if (!release) {
        m.lockAcquired(type, "busy", MODE);
        return null;
      }
      m.lockAcquired(type, "success", MODE);
      const heldSince = performance.now();
      let released = false;
      const inner = release;
      return async () => {
        if (!released) {
          released = true;
          m.lockHeld(type, (performance.now() - heldSince) / 1000, MODE);
        }
        await inner();
      };
    },
    holderOf: (name) => locker.holderOf(name),
    close: () => locker.close(),
  };
}
