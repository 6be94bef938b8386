/** DegradableLocker without Redis: a MemoryLocker stands in for the shared locker two
 * replicas take turns on (lock-redis-ha.test.ts runs it against real redis-server). */
import { afterEach, describe, expect, setSystemTime, test } from "bun:test";
import { DegradableLocker } from "../../src/lock/degradable.ts";
import { LockTimeoutError } from "../../src/lock/locker.ts";
import { MemoryLocker } from "../../src/lock/memory.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";

/** The shared locker, as DegradableLocker needs it: always reachable. */
class SharedLocker extends MemoryLocker {
  async check(): Promise<void> {}
}

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

afterEach(() => setSystemTime());

describe("DegradableLocker", () => {
  test("a wait used up in-process still reports the whole wait asked for, not what was left for the shared lock", async () => {
    const shared = new SharedLocker();
    const locker = new DegradableLocker(shared, { logger: silentLogger });
    const start = Date.now();
    // this process holds the lock, both in-process and shared
    const firstIn = gate();
    const firstHolds = gate();
    const first = locker.withLock("k", () => (firstIn.open(), firstHolds.opened));
    await firstIn.opened;
    // another replica queues for the shared lock, so it takes it when the first lets go
    const otherHolds = gate();
    const other = shared.withLock("k", () => otherHolds.opened, 60_000);
    let ran = false;
    const waited = locker.withLock("k", async () => void (ran = true), 5_000).catch((err: unknown) => err);
    // the in-process wait uses up the whole deadline: the lock comes with nothing left
    setSystemTime(start + 5_000);
    firstHolds.open();
    await first;
    const err = await waited;
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect(err).toMatchObject({ lockName: "k", waitMs: 5_000 });
    expect((err as Error).message).toContain("5000 ms");
    expect(ran).toBe(false);
    otherHolds.open();
    await other;
    await locker.close();
  });
});
