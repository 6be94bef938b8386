/** RedisLocker against the real Redis at NCPS_TEST_REDIS_URL. Every test uses its own key
 * prefix, so runs (and tests) never see each other's keys. */
import { afterEach, describe, expect, test } from "bun:test";
import { Redis } from "ioredis";
import { LockerClosedError, LockTimeoutError } from "../../src/lock/locker.ts";
import { RedisLocker, type RedisLockerOptions } from "../../src/lock/redis.ts";
import { createLogger } from "../../src/telemetry/logger.ts";
import { testIf } from "../helpers/prereq.ts";

const redisUrl = process.env.NCPS_TEST_REDIS_URL ?? null;

/** Locker options for the test server, from its redis:// (or rediss://) URL. */
function optionsFromUrl(url: string, keyPrefix: string): RedisLockerOptions {
  const u = new URL(url);
  const db = u.pathname.replace(/^\//, "");
  return {
    addrs: [`${u.hostname}:${u.port || "6379"}`],
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    db: db ? Number(db) : undefined,
    tls: u.protocol === "rediss:",
    keyPrefix,
  };
}

async function reachability(): Promise<string | null> {
  if (!redisUrl) return "NCPS_TEST_REDIS_URL is not set";
  const probe = new RedisLocker(optionsFromUrl(redisUrl, "ncps:test:probe:"));
  try {
    await probe.check();
    return null;
  } catch (err) {
    return `NCPS_TEST_REDIS_URL is unreachable: ${(err as Error).message}`;
  } finally {
    await probe.close();
  }
}

const problem = await reachability();
const redisTest = testIf(problem === null, `RedisLocker tests: ${problem}`);

/** Everything a test opened, closed after it whatever happened. */
const opened: { close(): Promise<unknown> }[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((c) => c.close().catch(() => {})));
});

/** A fresh key prefix and lockers (each its own connection) sharing it. */
function scope() {
  const keyPrefix = `ncps:test:${crypto.randomUUID()}:`;
  const locker = () => {
    const l = new RedisLocker(optionsFromUrl(redisUrl!, keyPrefix));
    opened.push(l);
    return l;
  };
  /** A plain client to look at the keys behind the lockers' backs. */
  const raw = () => {
    const r = new Redis(redisUrl!);
    opened.push({ close: () => r.quit() });
    return r;
  };
  return { keyPrefix, locker, raw };
}

/** Waits for commands on `key` as Redis sees them (MONITOR, its own connection): `next(match)`
 * resolves at the next command whose name matches, so a test waits for a renewal itself
 * rather than for the time it should take. */
async function watchKey(key: string) {
  const monitor = await new Redis(redisUrl!).monitor();
  opened.push({ close: async () => monitor.disconnect() });
  const seen: string[][] = [];
  const waiting: { match: RegExp; resolve: (args: string[]) => void }[] = [];
  monitor.on("monitor", (_time: string, args: string[]) => {
    if (!args.includes(key)) return;
    const i = waiting.findIndex((w) => w.match.test(args[0] ?? ""));
    if (i >= 0) waiting.splice(i, 1)[0]!.resolve(args);
    else seen.push(args);
  });
  return {
    next(match: RegExp): Promise<string[]> {
      const i = seen.findIndex((args) => match.test(args[0] ?? ""));
      if (i >= 0) return Promise.resolve(seen.splice(i, 1)[0]!);
      return new Promise((resolve) => waiting.push({ match, resolve }));
    },
  };
}

describe("RedisLocker", () => {
  redisTest("a lock is exclusive across two lockers (two connections), under the key prefix", async () => {
    const { keyPrefix, locker, raw } = scope();
    const a = locker();
    const b = locker();
    // both race for the same names many times: exactly one wins each
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => Promise.all([a.tryLock(`n${i}`), b.tryLock(`n${i}`)])),
    );
    for (const [fromA, fromB] of results) expect((fromA === null) !== (fromB === null)).toBe(true);
    expect(await raw().exists(`${keyPrefix}n0`)).toBe(1);
    for (const pair of results) for (const release of pair) await release?.();
  });

  redisTest("release by the owner frees the lock; a second release is harmless", async () => {
    const { keyPrefix, locker, raw } = scope();
    const a = locker();
    const b = locker();
    const release = await a.tryLock("k");
    expect(release).not.toBeNull();
    expect(await b.tryLock("k")).toBeNull();
    await release!();
    expect(await raw().exists(`${keyPrefix}k`)).toBe(0);
    const releaseB = await b.tryLock("k");
    expect(releaseB).not.toBeNull();
    await release!(); // stale: must not free b's lock
    expect(await a.tryLock("k")).toBeNull();
    await releaseB!();
  });

  redisTest("holderOf reads the holder note a holding was taken with; renewal and release keep to that holding", async () => {
    const { keyPrefix, locker, raw } = scope();
    const a = locker();
    const b = locker();
    const release = (await a.tryLock("k", 300, "http://replica-a:8501 proof"))!;
    expect(await b.holderOf("k")).toBe("http://replica-a:8501 proof");
    expect(await b.tryLock("k", 300, "http://replica-b:8501 proof")).toBeNull();
    await Bun.sleep(400); // renewed past its first TTL, the note with it
    expect(await b.holderOf("k")).toBe("http://replica-a:8501 proof");
    await release();
    expect(await raw().exists(`${keyPrefix}k`)).toBe(0);
    expect(await b.holderOf("k")).toBeNull();
    const plain = (await b.tryLock("k"))!;
    expect(await a.holderOf("k")).toBeNull();
    await plain();
  });

  redisTest("a lock value written into Redis at any size is not read whole: over 16 KiB it names no holder", async () => {
    const { keyPrefix, raw } = scope();
    const lines: string[] = [];
    const reader = new RedisLocker({ ...optionsFromUrl(redisUrl!, keyPrefix), logger: createLogger("warn", {}, (line) => lines.push(line)) });
    opened.push(reader);
    const redis = raw();
    // at the bound: read as usual
    const atBound = `token http://replica-a:8501 ${"p".repeat(16 * 1024 - "token http://replica-a:8501 ".length)}`;
    await redis.set(`${keyPrefix}at-bound`, atBound, "PX", 60_000);
    expect(await reader.holderOf("at-bound")).toBe(atBound.slice("token ".length));
    // 32 MiB: refused, having read a few KiB of it
    const huge = 32 * 1024 * 1024;
    await redis.set(`${keyPrefix}huge`, `token ${"x".repeat(huge)}`, "PX", 60_000);
    const sentBytes = async () => Number(/total_net_output_bytes:(\d+)/.exec(await redis.info("stats"))![1]);
    const before = await sentBytes();
    // (its length, not the note, in a failure: 32 MiB of "x" helps nobody)
    expect((await reader.holderOf("huge"))?.length ?? null).toBeNull();
    // (other clients of this Redis count too: well below the value, not an exact figure)
    expect((await sentBytes()) - before).toBeLessThan(huge / 2);
    expect(await reader.holderOf("huge")).toBeNull(); // a waiter looks again: reported once
    expect(lines.filter((line) => line.includes("lock value over the size"))).toHaveLength(1);
  });

  redisTest("a stale release after expiry and re-acquisition keeps the new holder's key", async () => {
    const { keyPrefix, locker, raw } = scope();
    const a = locker();
    const b = locker();
    const redis = raw();
    const staleRelease = (await a.tryLock("k"))!;
    expect(staleRelease).not.toBeNull();
    // the lease runs out (as when the holder was cut off longer than its TTL): a TTL of 0
    // expires the key at once
    await redis.pexpire(`${keyPrefix}k`, 0);
    const releaseB = await b.tryLock("k");
    expect(releaseB).not.toBeNull();
    const newToken = await redis.get(`${keyPrefix}k`);
    await staleRelease();
    expect(await redis.get(`${keyPrefix}k`)).toBe(newToken);
    expect(await a.tryLock("k")).toBeNull();
    await releaseB!();
    expect(await redis.exists(`${keyPrefix}k`)).toBe(0);
  });

  redisTest("TTL expiry frees a lock whose holder stopped renewing (closed without release)", async () => {
    const { keyPrefix, locker, raw } = scope();
    const holder = locker();
    const other = locker();
    expect(await holder.tryLock("k", 300)).not.toBeNull();
    await holder.close();
    // close does not delete the key: it is still held, with a finite TTL
    expect(await other.tryLock("k")).toBeNull();
    const pttl = await raw().pttl(`${keyPrefix}k`);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(300);
    // and once it expires the other locker gets it (waits as long as needed, within reason)
    expect(await other.withLock("k", async () => "taken", 10_000)).toBe("taken");
  });

  redisTest("a held lock is renewed past several TTLs, and its release deletes it", async () => {
    const { keyPrefix, locker, raw } = scope();
    const holder = locker();
    const other = locker();
    const redis = raw();
    const ttlMs = 600;
    const renewals = await watchKey(`${keyPrefix}k`);
    const release = await holder.tryLock("k", ttlMs);
    expect(release).not.toBeNull();
    const token = await redis.get(`${keyPrefix}k`);
    // 9 renewals, one every third of the TTL: 3 TTLs held. After each, the same holder and a
    // lease no longer than the TTL; the other locker never gets in.
    for (let i = 0; i < 9; i++) {
      await renewals.next(/^eval/i);
      expect(await redis.get(`${keyPrefix}k`)).toBe(token);
      expect(await redis.pttl(`${keyPrefix}k`)).toBeLessThanOrEqual(ttlMs);
      expect(await other.tryLock("k")).toBeNull();
    }
    await release!();
    expect(await redis.exists(`${keyPrefix}k`)).toBe(0);
  }, 15_000);

  redisTest("withLock serialises concurrent callers on two lockers and releases on throw", async () => {
    const { locker } = scope();
    const lockers = [locker(), locker()];
    let inside = 0;
    let maxInside = 0;
    let ran = 0;
    await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        lockers[i % 2]!.withLock("k", async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          await Bun.sleep(10);
          inside--;
          ran++;
        }),
      ),
    );
    expect(maxInside).toBe(1);
    expect(ran).toBe(12);
    expect(await lockers[0]!.withLock("k", async () => 42)).toBe(42);
    await expect(lockers[1]!.withLock("k", async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    const release = await lockers[0]!.tryLock("k");
    expect(release).not.toBeNull();
    await release!();
  });

  redisTest("withLock times out with LockTimeoutError while another locker holds the lock", async () => {
    const { locker } = scope();
    const a = locker();
    const b = locker();
    const release = await a.tryLock("k");
    expect(release).not.toBeNull();
    let ranInB = false;
    const err = await b.withLock("k", async () => void (ranInB = true), 200).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as LockTimeoutError).lockName).toBe("k");
    expect(ranInB).toBe(false);
    await release!();
    expect(await b.withLock("k", async () => "free again", 5_000)).toBe("free again");
  });

  redisTest("a closed locker refuses new locks and check() says so", async () => {
    const { locker } = scope();
    const a = locker();
    await a.check();
    await a.close();
    await expect(a.tryLock("k")).rejects.toBeInstanceOf(LockerClosedError);
    await expect(a.withLock("k", async () => 1)).rejects.toBeInstanceOf(LockerClosedError);
    await expect(a.check()).rejects.toThrow(/^cannot reach redis at .*closed/);
  });
});

describe("RedisLocker without a server", () => {
  test("check() on a closed port gives one line naming host:port, never the password", async () => {
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = probe.port;
    probe.stop(true);
    const locker = new RedisLocker({ addrs: [`127.0.0.1:${port}`], username: "ncps", password: "hunter2" });
    opened.push(locker);
    const err = await locker.check().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    const message = (err as Error).message;
    expect(message).toStartWith(`cannot reach redis at 127.0.0.1:${port}: `);
    expect(message).not.toContain("\n");
    expect(message).not.toContain("hunter2");
    // a lock attempt fails the same way, instead of waiting in a queue
    const lockErr = await locker.tryLock("k").catch((e: unknown) => e);
    expect((lockErr as Error).message).toContain(`127.0.0.1:${port}`);
    expect((lockErr as Error).message).not.toContain("hunter2");
  });

  test("check() against a server that accepts and never answers gives up at its deadline, in one line", async () => {
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const locker = new RedisLocker({ addrs: [`127.0.0.1:${silent.port}`] });
      opened.push(locker);
      const started = performance.now();
      await expect(locker.check()).rejects.toThrow(new RegExp(`^cannot reach redis at 127\\.0\\.0\\.1:${silent.port}: no answer within \\d+ ms$`));
      expect(performance.now() - started).toBeLessThan(10_000);
    } finally {
      silent.stop(true);
    }
  });

  test("addresses: the first is used; a bad one is refused; the port is required, as in Go ncps", () => {
    expect(new RedisLocker({ addrs: ["[::1]:7000", "other:1"] }).address).toBe("[::1]:7000");
    expect(() => new RedisLocker({ addrs: ["redis.internal"] })).toThrow("invalid redis address");
    expect(() => new RedisLocker({ addrs: [] })).toThrow("no address");
    expect(() => new RedisLocker({ addrs: ["host:notaport"] })).toThrow("invalid redis address");
  });
});
