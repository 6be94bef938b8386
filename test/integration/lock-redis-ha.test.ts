/** Redis as sites run it (issue 17), against real redis-server processes this file starts and
 * kills: several --cache-redis-addrs hold a lock on a majority (QuorumLocker), and
 * --cache-lock-allow-degraded-mode falls back to in-process locks while Redis does not answer,
 * at start or later, and goes back to Redis when it does. */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DegradableLocker } from "../../src/lock/degradable.ts";
import { LockTimeoutError, type Locker } from "../../src/lock/locker.ts";
import { openLocker } from "../../src/lock/open.ts";
import { QuorumLocker } from "../../src/lock/quorum.ts";
import { createLogger } from "../../src/telemetry/logger.ts";
import { eventually } from "../helpers/eventually.ts";
import { scrape } from "../helpers/metrics.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { testIf } from "../helpers/prereq.ts";
import { haveRedisServer, startRedisServer, type RedisServer } from "../helpers/redis-servers.ts";
import { makeSyntheticCache } from "../helpers/synthetic-cache.ts";
import { startStoppedPort, startUpstream } from "../helpers/upstream-server.ts";

const redisTest = testIf(haveRedisServer, "redis-server not installed");
const work = await mkdtemp(join(tmpdir(), "ncps-lock-redis-ha-"));

const servers: RedisServer[] = [];
const opened: { close(): Promise<unknown> }[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((c) => c.close().catch(() => {})));
  await Promise.all(servers.splice(0).map((s) => s.kill()));
});
afterAll(() => rm(work, { recursive: true, force: true }));

async function redisServers(n: number): Promise<RedisServer[]> {
  const started = await Promise.all(Array.from({ length: n }, () => startRedisServer()));
  servers.push(...started);
  return started;
}

function logLines() {
  const lines: string[] = [];
  return { lines, logger: createLogger("info", {}, (line) => lines.push(line)) };
}

/** The lock key on each server: which of them hold `name`. */
async function holders(all: RedisServer[], keyPrefix: string, name: string): Promise<boolean[]> {
  return Promise.all(all.map(async (s) => (s.running ? (await s.client().exists(keyPrefix + name)) === 1 : false)));
}

describe("several --cache-redis-addrs: a lock is held on a majority", () => {
  redisTest("two replicas never hold one lock; it lives on every server; one server down changes nothing, two down is an error naming them", async () => {
    const all = await redisServers(3);
    const keyPrefix = `ncps:test:${crypto.randomUUID()}:`;
    const locker = () => {
      const l = new QuorumLocker({ addrs: all.map((s) => s.addr), keyPrefix });
      opened.push(l);
      return l;
    };
    const a = locker();
    const b = locker();
    expect(a.quorum).toBe(2);

    const release = await a.tryLock("download:x", 10_000);
    expect(release).not.toBeNull();
    expect(await holders(all, keyPrefix, "download:x")).toEqual([true, true, true]);
    expect(await b.tryLock("download:x", 10_000)).toBeNull();
    await release!();
    expect(await holders(all, keyPrefix, "download:x")).toEqual([false, false, false]);

    await all[0]!.kill();
    const again = await b.tryLock("download:x", 10_000);
    expect(again).not.toBeNull();
    expect(await a.tryLock("download:x", 10_000)).toBeNull();
    await again!();

    await all[1]!.kill();
    const err = await a.tryLock("download:y", 10_000).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/only 1 of 3 redis servers answered, 2 needed/);
    expect((err as Error).message).toContain(all[0]!.addr);
    expect((err as Error).message.split("\n")).toHaveLength(1);

    await all[1]!.start();
    await eventually("a quorum answering a's check again", () => a.check().then(() => true, () => false)); // its connection comes back
    const back = await a.tryLock("download:y", 10_000);
    expect(back).not.toBeNull();
    expect(await holders(all, keyPrefix, "download:y")).toEqual([false, true, true]);
    await back!();
  });

  redisTest("holderOf reads the holder note a majority holds: one server down or rewritten changes nothing", async () => {
    const all = await redisServers(3);
    const keyPrefix = `ncps:test:${crypto.randomUUID()}:`;
    const [a, b] = [0, 1].map(() => {
      const l = new QuorumLocker({ addrs: all.map((s) => s.addr), keyPrefix });
      opened.push(l);
      return l;
    }) as [QuorumLocker, QuorumLocker];
    const release = (await a.tryLock("download:x", 10_000, "http://replica-a:8501 proof"))!;
    expect(await b.holderOf("download:x")).toBe("http://replica-a:8501 proof");
    await all[0]!.client().set(`${keyPrefix}download:x`, "forged http://elsewhere:1 proof");
    expect(await b.holderOf("download:x")).toBe("http://replica-a:8501 proof");
    await all[1]!.kill();
    expect(await b.holderOf("download:x")).toBeNull(); // one honest copy left: no majority
    await release();
    expect(await b.holderOf("download:y")).toBeNull();
  });

  redisTest("many replicas racing for one lock: exactly one holds it at a time", async () => {
    const all = await redisServers(3);
    const keyPrefix = `ncps:test:${crypto.randomUUID()}:`;
    const lockers = Array.from({ length: 4 }, () => new QuorumLocker({ addrs: all.map((s) => s.addr), keyPrefix }));
    opened.push(...lockers);
    let holding = 0;
    let most = 0;
    let runs = 0;
    await Promise.all(
      lockers.flatMap((l) =>
        Array.from({ length: 5 }, () =>
          l.withLock("eviction", async () => {
            most = Math.max(most, ++holding);
            await Bun.sleep(5);
            holding--;
            runs++;
          }),
        ),
      ),
    );
    expect(runs).toBe(20);
    expect(most).toBe(1);
  });

  redisTest("at start, a majority must answer: otherwise one line naming the servers that did not", async () => {
    const [up] = await redisServers(1);
    const down = [await startStoppedPort(), await startStoppedPort()].map((p) => `127.0.0.1:${p.port}`);
    const err = await openLocker({ addrs: [up!.addr, ...down] }, createLogger("error", {}, () => {})).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain("only 1 of 3 redis servers answered, 2 needed");
    for (const addr of down) expect((err as Error).message).toContain(addr);
    const ok = await openLocker({ addrs: [up!.addr, down[0]!, (await redisServers(1))[0]!.addr] }, createLogger("error", {}, () => {}));
    opened.push(ok);
    expect(await ok.tryLock("x")).not.toBeNull();
  });
});

describe("--cache-lock-allow-degraded-mode", () => {
  const degradedEvents = () => {
    const events: boolean[] = [];
    return { events, mode: { onDegraded: (on: boolean) => events.push(on), probeIntervalMs: 50 } };
  };

  redisTest("Redis lost while running: locks go in-process with one warning, and back to Redis once it answers", async () => {
    const [server] = await redisServers(1);
    const keyPrefix = `ncps:test:${crypto.randomUUID()}:`;
    const { lines, logger } = logLines();
    const { events, mode } = degradedEvents();
    const locker = (await openLocker({ addrs: [server!.addr], keyPrefix }, logger, mode)) as DegradableLocker;
    opened.push(locker);
    const first = await locker.tryLock("download:a");
    expect(await server!.client().exists(`${keyPrefix}download:a`)).toBe(1);
    await first!();

    await server!.kill();
    const local = await locker.tryLock("download:b");
    expect(local).not.toBeNull();
    expect(await locker.tryLock("download:b")).toBeNull(); // still exclusive, within this process
    expect(await locker.withLock("eviction", async () => "ran")).toBe("ran");
    expect(locker.degraded).toBe(true);
    expect(events).toEqual([true]);
    expect(lines.filter((l) => l.includes("taking locks in this process only"))).toHaveLength(1);

    await server!.start();
    await eventually("the locker no longer degraded", () => !locker.degraded); // the probe runs on its own timer
    expect(events).toEqual([true, false]);
    expect(lines.some((l) => l.includes("redis answers again"))).toBe(true);
    const shared = await locker.tryLock("download:c");
    expect(await server!.client().exists(`${keyPrefix}download:c`)).toBe(1);
    await shared!();
    await local!(); // taken in-process, released there
  });

  redisTest("a lock taken in-process while Redis was away still excludes this process's others once Redis is back", async () => {
    const [server] = await redisServers(1);
    const keyPrefix = `ncps:test:${crypto.randomUUID()}:`;
    const { logger } = logLines();
    const { mode } = degradedEvents();
    const locker = (await openLocker({ addrs: [server!.addr], keyPrefix }, logger, mode)) as DegradableLocker;
    opened.push(locker);
    await server!.kill();
    const local = await locker.tryLock("upload:k");
    expect(local).not.toBeNull();
    await server!.start();
    await eventually("the locker no longer degraded", () => !locker.degraded); // the probe runs on its own timer
    expect(await locker.tryLock("upload:k")).toBeNull();
    await expect(locker.withLock("upload:k", async () => "ran", 200)).rejects.toBeInstanceOf(LockTimeoutError);
    await local!();
    const shared = await locker.tryLock("upload:k");
    expect(shared).not.toBeNull();
    expect(await server!.client().exists(`${keyPrefix}upload:k`)).toBe(1);
    expect(await locker.tryLock("upload:k")).toBeNull();
    await shared!();
    expect(await server!.client().exists(`${keyPrefix}upload:k`)).toBe(0);
    expect(await locker.withLock("upload:k", async () => "ran", 200)).toBe("ran");
  });

  redisTest("Redis down at start: ncps starts degraded instead of refusing; a quorum coming back ends it", async () => {
    const all = await redisServers(3);
    await all[1]!.kill();
    await all[2]!.kill();
    const keyPrefix = `ncps:test:${crypto.randomUUID()}:`;
    const { lines, logger } = logLines();
    const { events, mode } = degradedEvents();
    const locker = (await openLocker({ addrs: all.map((s) => s.addr), keyPrefix }, logger, mode)) as DegradableLocker;
    opened.push(locker);
    expect(locker.degraded).toBe(true);
    expect(events).toEqual([true]);
    expect(lines.find((l) => l.includes("taking locks in this process only"))).toContain("only 1 of 3 redis servers answered");
    expect(await locker.tryLock("download:a")).not.toBeNull();

    await all[2]!.start();
    await eventually("the locker no longer degraded", () => !locker.degraded); // the probe runs on its own timer
    const shared = await locker.tryLock("download:b");
    expect(await holders(all, keyPrefix, "download:b")).toEqual([true, false, true]);
    await shared!();
  });

  test("a waiter for a lock taken in-process while degraded gives up after the default wait, with LockTimeoutError", async () => {
    const nobody = await startStoppedPort();
    const { logger } = logLines();
    const mode = { probeIntervalMs: 60_000, defaultWaitMs: 200 };
    const locker = (await openLocker({ addrs: [`127.0.0.1:${nobody.port}`] }, logger, mode)) as DegradableLocker;
    opened.push(locker);
    expect(locker.degraded).toBe(true);
    const held = (await locker.tryLock("upload:k"))!;
    let ran = false;
    const waited = locker.withLock("upload:k", async () => void (ran = true)).catch((err: unknown) => err);
    expect(await waited).toBeInstanceOf(LockTimeoutError);
    expect(await waited).toMatchObject({ lockName: "upload:k", waitMs: 200 });
    expect(ran).toBe(false);
    await held();
  });

  redisTest("without it, Redis lost while running fails the lock, as before", async () => {
    const [server] = await redisServers(1);
    const locker: Locker = await openLocker({ addrs: [server!.addr] }, createLogger("error", {}, () => {}));
    opened.push(locker);
    await server!.kill();
    await expect(locker.tryLock("download:a")).rejects.toThrow(server!.addr);
  });

  redisTest("ncps serve with Redis unreachable starts, serves a miss, and says so in a warning and ncps_lock_degraded", async () => {
    const cache = await makeSyntheticCache(join(work, "upstream"));
    const upstream = await startUpstream(cache.dir);
    opened.push({ close: () => upstream.stop() });
    const path = await cache.add("degraded-miss");
    const dead = await startStoppedPort();
    const { lines, logger } = logLines();
    const ncps = await startInProcess(
      join(work, "ncps"),
      {
        "cache-upstream-url": [upstream.url],
        "cache-upstream-public-key": [cache.publicKey],
        "cache-redis-addrs": [`127.0.0.1:${dead.port}`],
        "cache-lock-allow-degraded-mode": true,
        "prometheus-enabled": true,
      },
      logger,
    );
    opened.push({ close: () => ncps.stop() });
    expect((await fetch(`${ncps.url}/${path.hash}.narinfo`)).status).toBe(200);
    const nar = await fetch(`${ncps.url}/${path.narinfo.url}`);
    expect(nar.status).toBe(200);
    expect(Buffer.from(await nar.arrayBuffer()).equals(Buffer.from(path.file))).toBe(true);
    expect(lines.some((l) => l.includes("taking locks in this process only") && l.includes(`127.0.0.1:${dead.port}`))).toBe(true);
    expect((await scrape(ncps.url)).value("ncps_lock_degraded")).toBe(1);
  });
});
