/** Forgets shared through Redis pub/sub: what one replica's HotNarInfos forgets, another's
 * forgets; its own messages are not heard back; what is not a store path hash is ignored.
 * A wait for a Redis that never answers gives up and leaves nothing behind. */
import { afterEach, test as testWithoutRedis, expect } from "bun:test";
import { Redis } from "ioredis";
import { HotNarInfos } from "../../src/cache/hot-narinfos.ts";
import { RedisBroadcast } from "../../src/lock/redis-broadcast.ts";
import { eventually } from "../helpers/eventually.ts";
import { startStoppedPort } from "../helpers/ports.ts";
import { testIf } from "../helpers/prereq.ts";

const redisUrl = process.env.NCPS_TEST_REDIS_URL;
const test = testIf(redisUrl !== undefined, "NCPS_TEST_REDIS_URL is not set");
const opened: { close(): Promise<unknown> }[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((c) => c.close()));
});

test("a forget on one replica reaches the other's copy; its own is not heard back; junk is ignored", async () => {
  const r = new URL(redisUrl!);
  const addr = `${r.hostname}:${r.port || "6379"}`;
  const keyPrefix = `ncps-test-${crypto.randomUUID()}:`;
  const heard: string[][] = [[], []];
  const hots = [0, 1].map((i) => {
    const broadcast = new RedisBroadcast({ addrs: [addr], keyPrefix, channel: "narinfo-forget" });
    opened.push(broadcast);
    broadcast.listen((m) => heard[i]!.push(m));
    const hot = new HotNarInfos();
    hot.shareThrough(broadcast);
    return hot;
  }) as [HotNarInfos, HotNarInfos];
  const raw = new Redis({ host: r.hostname, port: Number(r.port || "6379") });
  opened.push({ close: async () => raw.disconnect() });
  const hash = "0".repeat(32);
  const other = "1".repeat(32);
  for (const hot of hots) for (const h of [hash, other]) hot.set(h, new Uint8Array(8));
  await eventually("both replicas subscribed", async () => Number((await raw.pubsub("NUMSUB", `${keyPrefix}narinfo-forget`))[1]) >= 2);

  await raw.publish(`${keyPrefix}narinfo-forget`, `someone ../../etc/passwd`);
  await raw.publish(`${keyPrefix}narinfo-forget`, `someone ${"e".repeat(32)}`);
  hots[0].forget(hash);
  await eventually("the other replica forgetting it", () => hots[1].get(hash) === null, { deadlineMs: 2_000, everyMs: 10 });
  expect(hots[1].get(other)).not.toBeNull();
  expect(heard[0]).toEqual(["../../etc/passwd", "e".repeat(32)]);
  expect(heard[1]).toEqual(["../../etc/passwd", "e".repeat(32), hash]);
});

testWithoutRedis("a wait for a Redis that never answers gives up at its deadline, and each leaves no listener behind", async () => {
  const nobody = await startStoppedPort();
  const broadcast = new RedisBroadcast({ addrs: [`127.0.0.1:${nobody.port}`], channel: "narinfo-forget" });
  opened.push(broadcast);
  const readyListeners = () => broadcast["servers"].map(({ pub }) => pub.listenerCount("ready"));
  const before = readyListeners();
  for (let i = 0; i < 5; i++) expect(await broadcast.connected(20)).toBe(false);
  expect(readyListeners()).toEqual(before);
});
