import { describe, expect, jest, test } from "bun:test";
import { DEFAULT_WAIT_MS, LockerClosedError, LockTimeoutError } from "../../src/lock/locker.ts";
import { MemoryLocker } from "../../src/lock/memory.ts";

/** A promise plus the function that resolves it: lets a test hold a lock as long as it likes. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

/** Let every queued microtask and timer-free continuation run. */
const settle = () => Bun.sleep(0);

describe("MemoryLocker", () => {
  test("one holder at a time per name", async () => {
    const locker = new MemoryLocker();
    let inside = 0;
    let maxInside = 0;
    await Promise.all(
      Array.from({ length: 20 }, () =>
        locker.withLock("nar/x", async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          await settle();
          inside--;
        }),
      ),
    );
    expect(maxInside).toBe(1);
  });

  test("different names do not block each other", async () => {
    const locker = new MemoryLocker();
    const hold = gate();
    const first = locker.withLock("a", () => hold.opened);
    let ranB = false;
    await locker.withLock("b", async () => {
      ranB = true;
    });
    expect(ranB).toBe(true);
    hold.open();
    await first;
  });

  test("waiters get the lock in arrival order", async () => {
    const locker = new MemoryLocker();
    const hold = gate();
    const order: string[] = [];
    const holding = locker.withLock("k", () => hold.opened);
    const waiting = ["A", "B", "C", "D"].map((who) => locker.withLock("k", async () => void order.push(who)));
    await settle();
    expect(order).toEqual([]);
    hold.open();
    await Promise.all([holding, ...waiting]);
    expect(order).toEqual(["A", "B", "C", "D"]);
  });

  test("withLock returns fn's value, and a throwing fn still releases the lock", async () => {
    const locker = new MemoryLocker();
    expect(await locker.withLock("k", async () => 42)).toBe(42);
    await expect(locker.withLock("k", async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    const release = await locker.tryLock("k");
    expect(release).not.toBeNull();
    await release!();
  });

  test("a waiter that times out gets LockTimeoutError, never runs, and leaves the queue", async () => {
    const locker = new MemoryLocker();
    const hold = gate();
    const holding = locker.withLock("k", () => hold.opened);
    let timedOutRan = false;
    const timedOut = locker.withLock("k", async () => void (timedOutRan = true), 10).catch((e: unknown) => e);
    const patient = locker.withLock("k", async () => "patient");
    const err = await timedOut;
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as LockTimeoutError).lockName).toBe("k");
    hold.open();
    expect(await patient).toBe("patient");
    await holding;
    expect(timedOutRan).toBe(false);
    // and the lock is free again
    expect(await locker.tryLock("k")).not.toBeNull();
  });

  test("a waiter not told how long to wait gives up after the default wait, with LockTimeoutError naming it", async () => {
    const locker = new MemoryLocker(50);
    const release = (await locker.tryLock("k"))!;
    let ran = false;
    const err = await locker.withLock("k", async () => void (ran = true)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect(err).toMatchObject({ lockName: "k", waitMs: 50 });
    expect(ran).toBe(false);
    await release();
    expect(await locker.withLock("k", async () => "free again")).toBe("free again");
  });

  test("by default a waiter gives up after DEFAULT_WAIT_MS, as a Redis locker's does", async () => {
    jest.useFakeTimers();
    try {
      const locker = new MemoryLocker();
      const release = (await locker.tryLock("k"))!;
      let outcome: unknown = "waiting";
      void locker.withLock("k", async () => "ran").then(
        (value) => (outcome = value),
        (err: unknown) => (outcome = err),
      );
      jest.advanceTimersByTime(DEFAULT_WAIT_MS - 1);
      await Promise.resolve();
      expect(outcome).toBe("waiting");
      jest.advanceTimersByTime(1);
      for (let i = 0; i < 5; i++) await Promise.resolve();
      expect(outcome).toBeInstanceOf(LockTimeoutError);
      expect(outcome).toMatchObject({ waitMs: DEFAULT_WAIT_MS });
      await release();
    } finally {
      jest.useRealTimers();
    }
  });

  test("tryLock takes a free lock, refuses a held one, and shares the lock with withLock", async () => {
    const locker = new MemoryLocker();
    const release = await locker.tryLock("k");
    expect(release).not.toBeNull();
    expect(await locker.tryLock("k")).toBeNull();
    let ran = false;
    const waiting = locker.withLock("k", async () => void (ran = true));
    await settle();
    expect(ran).toBe(false);
    await release!();
    // handed to the queued waiter: a newcomer cannot barge in
    expect(await locker.tryLock("k")).toBeNull();
    await waiting;
    expect(ran).toBe(true);

    const hold = gate();
    const holding = locker.withLock("k", () => hold.opened);
    expect(await locker.tryLock("k")).toBeNull();
    hold.open();
    await holding;
  });

  test("holderOf reads the note a holding was taken with, null when free or taken without one", async () => {
    const locker = new MemoryLocker();
    const release = (await locker.tryLock("k", undefined, "http://replica-a:8501 proof"))!;
    expect(await locker.holderOf("k")).toBe("http://replica-a:8501 proof");
    await release();
    expect(await locker.holderOf("k")).toBeNull();
    const plain = (await locker.tryLock("k"))!;
    expect(await locker.holderOf("k")).toBeNull();
    await plain();
  });

  test("a release called twice does not release the next holder", async () => {
    const locker = new MemoryLocker();
    const release = (await locker.tryLock("k"))!;
    await release();
    const second = (await locker.tryLock("k"))!;
    expect(second).not.toBeNull();
    await release(); // stale: must be a no-op
    expect(await locker.tryLock("k")).toBeNull();
    await second();
  });

  test("a tryLock with a ttl frees itself, and its late release is harmless", async () => {
    const locker = new MemoryLocker();
    const forgotten = (await locker.tryLock("k", 10))!;
    // waits (within the default wait) until the ttl frees the lock
    const next = locker.withLock("k", async () => {
      await forgotten(); // the old holder's late release must not free the lock we hold now
      return await locker.tryLock("k");
    });
    expect(await next).toBeNull();
  });

  test("close fails queued waiters and refuses new locks", async () => {
    const locker = new MemoryLocker();
    const hold = gate();
    const holding = locker.withLock("k", () => hold.opened);
    const waiting = locker.withLock("k", async () => "never").catch((e: unknown) => e);
    await settle();
    await locker.close();
    expect(await waiting).toBeInstanceOf(LockerClosedError);
    await expect(locker.withLock("other", async () => 1)).rejects.toBeInstanceOf(LockerClosedError);
    await expect(locker.tryLock("other")).rejects.toBeInstanceOf(LockerClosedError);
    hold.open();
    await holding;
  });
});
