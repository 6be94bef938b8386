/** Two replicas sharing one database and one storage directory, coordinated through Redis:
 * one upstream download per NAR, whichever replica the clients reach; a replica waiting on
 * the other's download streams it from that one as it arrives, verified, and never follows a
 * claim it cannot trust. */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { Redis } from "ioredis";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ReplicaPeers, REPLICA_PREFIX } from "../../src/cache/replica-peers.ts";
import { startNcps, type RunningNcps } from "../../src/compose.ts";
import { loadConfig } from "../../src/config/load.ts";
import { openMetadataStore } from "../../src/db/open.ts";
import { parseNcpsNarRequest } from "../../src/nix/nar-url.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { serializeNarInfo } from "../../src/nix/narinfo.ts";
import { formatPublicKey, formatSecretKey, generateSecretKey, signNarInfo, toPublicKey } from "../../src/nix/signature.ts";
import { createLogger, silentLogger } from "../../src/telemetry/logger.ts";
import { eventually } from "../helpers/eventually.ts";
import { testIf } from "../helpers/prereq.ts";
import { scrape } from "../helpers/metrics.ts";
import { readDigest, sha256Nix32 } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const redisUrl = process.env.NCPS_TEST_REDIS_URL;
const test = testIf(redisUrl !== undefined, "NCPS_TEST_REDIS_URL is not set (a Redis server for the replica lock)");
const SIZE = 8 * 1024 * 1024;
const upstreamKey = generateSecretKey("replica-upstream-1");
const cacheKey = generateSecretKey("ncps-ha");

interface Nar {
  bytes: Uint8Array;
  storeHash: string;
  fileHash: string;
  /** the upstream's path of the NAR */
  upstreamPath: string;
  /** the NAR's key on ncps: its path, "nar/<hash>.nar" */
  key: string;
}

describe("replicas sharing database and storage, coordinated through Redis", () => {
  let work: string;
  let upstream: Upstream;
  let replicas: RunningNcps[] = [];
  let redis: Redis;
  let prefix: string;
  let sharedDbUrl: string;

  /** A fresh NAR on the upstream, its narinfo fetched through replica 0. */
  async function addNar(size = SIZE): Promise<Nar> {
    const bytes = crypto.getRandomValues(new Uint8Array(size));
    const fileHash = `sha256:${encodeNix32(new Bun.CryptoHasher("sha256").update(bytes).digest())}`;
    const storeHash = encodeNix32(crypto.getRandomValues(new Uint8Array(20)));
    const narinfo = signNarInfo(
      { storePath: `/nix/store/${storeHash}-blob`, url: `nar/${fileHash.slice(7)}.nar`, compression: "none", fileHash, fileSize: size, narHash: fileHash, narSize: size, references: [], sigs: [], extra: [] },
      upstreamKey,
    );
    await Bun.write(join(upstream.dir, narinfo.url), bytes);
    await writeFile(join(upstream.dir, `${storeHash}.narinfo`), serializeNarInfo(narinfo));
    const served = await (await fetch(`${replicas[0]!.url}/${storeHash}.narinfo`)).text();
    const key = /^URL: (.*)$/m.exec(served)![1]!;
    return { bytes, storeHash, fileHash, upstreamPath: `/${narinfo.url}`, key };
  }

  beforeAll(async () => {
    if (redisUrl === undefined) return;
    work = await mkdtemp(join(tmpdir(), "ncps-replicas-"));
    const dir = join(work, "upstream");
    await mkdir(join(dir, "nar"), { recursive: true });
    await writeFile(join(dir, "nix-cache-info"), "StoreDir: /nix/store\n");
    upstream = await startUpstream(dir);
    const keyFile = join(work, "cache.sk");
    await writeFile(keyFile, formatSecretKey(cacheKey));

    const r = new URL(redisUrl);
    redis = new Redis({ host: r.hostname, port: Number(r.port || "6379") });
    const shared = join(work, "shared");
    sharedDbUrl = `sqlite:${join(shared, "db.sqlite")}`;
    prefix = `ncps-test-${crypto.randomUUID()}:`;
    for (const name of ["a", "b"]) {
      const config = await loadConfig(
        {
          "server-addr": "127.0.0.1:0",
          "cache-hostname": "ncps-ha",
          "cache-secret-key-path": keyFile,
          "cache-storage-local": shared,
          "cache-database-url": sharedDbUrl,
          "cache-temp-path": join(work, `tmp-${name}`),
          "cache-upstream-url": [upstream.url],
          "cache-upstream-public-key": [formatPublicKey(toPublicKey(upstreamKey))],
          "cache-redis-addrs": [`${r.hostname}:${r.port || "6379"}`],
          "cache-lock-redis-key-prefix": prefix,
          "cache-lock-download-ttl": "2s",
          "cache-allow-delete-verb": true,
          "cache-allow-put-verb": true,
          "prometheus-enabled": true,
        },
        {},
      );
      replicas.push(await startNcps(config, process.env.DEBUG_REPLICAS ? createLogger("debug") : silentLogger));
    }
  }, 60_000);

  afterAll(async () => {
    for (const r of replicas) await r.stop();
    await upstream?.stop();
    redis?.disconnect();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test("8 clients spread over two replicas on one uncached NAR: one upstream download, all verified", async () => {
    const nar = await addNar();
    upstream.fault(nar.upstreamPath, { kind: "slow", bytesPerSecond: 4 * 1024 * 1024 }); // about 2 s in flight
    const results = await Promise.all(Array.from({ length: 8 }, async (_, i) => readDigest(await fetch(`${replicas[i % 2]!.url}/${nar.key}`))));
    for (const r of results) expect(r).toEqual({ status: 200, n: SIZE, hash: nar.fileHash });
    expect(upstream.hits(nar.upstreamPath)).toBe(1);
    // both replicas now serve it from the shared storage
    await Promise.all(replicas.map((r) => r.cache.drain()));
    for (const r of replicas) {
      const again = await fetch(`${r.url}/${nar.key}`);
      expect(Number(again.headers.get("content-length"))).toBe(SIZE);
      await again.arrayBuffer();
    }
    expect(upstream.hits(nar.upstreamPath)).toBe(1);
  }, 60_000);

  test("a client of the waiting replica gets bytes while the other replica is still downloading", async () => {
    const nar = await addNar();
    const release = Promise.withResolvers<void>();
    upstream.fault(nar.upstreamPath, { kind: "hold", afterBytes: 1024 * 1024, until: release.promise });
    const [a, b] = replicas as [RunningNcps, RunningNcps];
    const before = await scrape(b.url);
    const relaysBefore = { verified: before.value("ncps_replica_relays_total", { result: "verified" }), bytes: before.value("ncps_replica_bytes_fetched_total") };
    const relaysOnHolder = (await scrape(a.url)).value("ncps_replica_relays_total");
    const onHolder = fetch(`${a.url}/${nar.key}`);
    const holderRes = await onHolder;
    expect(holderRes.status).toBe(200);
    const holderDigest = readDigest(holderRes);
    // The upstream has sent 1 MiB and holds the rest: nothing can be stored until it is released.
    const firstBytes = async () => {
      const res = await fetch(`${b.url}/${nar.key}`);
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      return { reader, first: await reader.read() };
    };
    const got = await Promise.race([firstBytes(), Bun.sleep(10_000).then(() => null)]);
    const stillDownloading = a.cache.isDownloading(nar.key);
    release.resolve();
    expect(got?.first.value?.length).toBeGreaterThan(0);
    expect(stillDownloading).toBe(true);
    const { reader, first } = got!;
    const h = new Bun.CryptoHasher("sha256").update(first!.value!);
    let n = first!.value!.length;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      h.update(value);
      n += value.length;
    }
    expect({ n, hash: `sha256:${encodeNix32(h.digest())}` }).toEqual({ n: SIZE, hash: nar.fileHash });
    expect(await holderDigest).toEqual({ status: 200, n: SIZE, hash: nar.fileHash });
    expect(upstream.hits(nar.upstreamPath)).toBe(1);
    // the relay is counted once it has ended, the holder's record seen
    const relayed = await eventually("the relay counted", async () => {
      const m = await scrape(b.url);
      return m.value("ncps_replica_relays_total", { result: "verified" }) > relaysBefore.verified ? m : null;
    });
    expect(relayed.value("ncps_replica_bytes_fetched_total") - relaysBefore.bytes).toBe(SIZE);
    expect((await scrape(a.url)).value("ncps_replica_relays_total")).toBe(relaysOnHolder);
  }, 60_000);

  test("a claim in Redis that no replica wrote is never followed: the waiting replica takes the download over when it lapses", async () => {
    const nar = await addNar();
    let trapped = 0;
    const trap = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: () => {
        trapped++;
        return new Response(nar.bytes);
      },
    });
    try {
      // A claim naming the trap, with a made-up proof, as anyone able to write to Redis could.
      const crafted = `${crypto.randomUUID()} http://127.0.0.1:${trap.port} ${Buffer.alloc(32, 7).toString("base64url")}`;
      expect(await redis.set(`${prefix}download:${nar.key}`, crafted, "PX", 1500, "NX")).toBe("OK");
      const got = await readDigest(await fetch(`${replicas[1]!.url}/${nar.key}`));
      expect(got).toEqual({ status: 200, n: SIZE, hash: nar.fileHash });
      expect(trapped).toBe(0);
      expect(upstream.hits(nar.upstreamPath)).toBe(1);
    } finally {
      await trap.stop(true);
    }
  }, 60_000);

  test("a holder sending bytes that are not the NAR: the waiting replica's client gets an aborted stream and nothing is recorded", async () => {
    const nar = await addNar();
    const wrong = crypto.getRandomValues(new Uint8Array(SIZE));
    let asked = 0;
    const liar = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: () => {
        asked++;
        return new Response(wrong, { headers: { "content-length": String(SIZE) } });
      },
    });
    try {
      // A claim with a valid proof (made with the replicas' secret) naming a holder that lies.
      const peers = new ReplicaPeers(cacheKey, () => `http://127.0.0.1:${liar.port}`);
      const claim = `${crypto.randomUUID()} ${peers.claimNote(nar.key)}`;
      expect(await redis.set(`${prefix}download:${nar.key}`, claim, "PX", 1500, "NX")).toBe("OK");
      const failedBefore = (await scrape(replicas[1]!.url)).value("ncps_replica_relays_total", { result: "failed" });
      const res = await fetch(`${replicas[1]!.url}/${nar.key}`);
      expect(res.status).toBe(200);
      await expect(readDigest(res)).rejects.toThrow();
      expect(asked).toBeGreaterThan(0);
      const counted = await eventually("the failed relay counted", async () => {
        const m = await scrape(replicas[1]!.url);
        return m.value("ncps_replica_relays_total", { result: "failed" }) > failedBefore ? m : null;
      });
      expect(counted.value("ncps_nar_verification_failures_total")).toBeGreaterThan(0);
      expect(await replicas[1]!.cache.nar(parseNcpsNarRequest(nar.key), { startDownload: false, upstream: false })).toBeNull();
    } finally {
      await liar.stop(true);
    }
  }, 60_000);

  test("an eviction pass on one replica first has the other write the access times it holds", async () => {
    const [a, b] = replicas as [RunningNcps, RunningNcps];
    const nar = await addNar(64 * 1024); // its narinfo a miss on a
    await a.cache.writeAccessTimes();
    const db = await openMetadataStore(sharedDbUrl, { migrate: false });
    try {
      const accessedAt = async () => (await db.narInfosByAge(100_000)).find((n) => n.hash === nar.storeHash)!.lastAccessedAt;
      const missed = await accessedAt();
      await Bun.sleep(250); // past the 100 ms to which access times are written
      expect((await fetch(`${b.url}/${nar.storeHash}.narinfo`)).status).toBe(200); // a hit, held in b's memory
      await a.cache.writeAccessTimes(); // what a pass on a does first
      expect(await accessedAt()).toBeGreaterThan(missed);
    } finally {
      await db.close();
    }
  }, 60_000);

  test("a narinfo deleted through one replica stops being served by the other at once, not after its copy expires", async () => {
    const nar = await addNar(1024);
    const [a, b] = replicas as [RunningNcps, RunningNcps];
    const narinfo = `${nar.storeHash}.narinfo`;
    for (const r of [a, b]) expect((await fetch(`${r.url}/${narinfo}`)).status).toBe(200); // both hold a copy in memory
    upstream.fault(`/${narinfo}`, { kind: "status", status: 404 }); // asked again, the upstream no longer has it
    expect((await fetch(`${a.url}/${narinfo}`, { method: "DELETE" })).status).toBeLessThan(300);
    expect((await fetch(`${a.url}/${narinfo}`)).status).toBe(404);
    // 2 s, far below the narinfo copies' own expiry of 30 s
    await eventually("the other replica answering 404", async () => (await fetch(`${b.url}/${narinfo}`)).status === 404, { deadlineMs: 2_000 });
  }, 30_000);

  test("a narinfo uploaded through one replica is served by the other at once, though it remembered the path as missing", async () => {
    const bytes = crypto.getRandomValues(new Uint8Array(4096));
    const fileHash = sha256Nix32(bytes);
    const storeHash = encodeNix32(crypto.getRandomValues(new Uint8Array(20)));
    const [a, b] = replicas as [RunningNcps, RunningNcps];
    expect((await fetch(`${b.url}/${storeHash}.narinfo`)).status).toBe(404); // no upstream has it: remembered as a miss
    const narUrl = `nar/${fileHash.slice(7)}.nar`;
    expect((await fetch(`${a.url}/${narUrl}`, { method: "PUT", body: bytes })).status).toBeLessThan(300);
    const text = serializeNarInfo({ storePath: `/nix/store/${storeHash}-uploaded`, url: narUrl, compression: "none", fileHash, fileSize: bytes.length, narHash: fileHash, narSize: bytes.length, references: [], sigs: [], extra: [] });
    expect((await fetch(`${a.url}/${storeHash}.narinfo`, { method: "PUT", body: text })).status).toBeLessThan(300);
    expect((await fetch(`${b.url}/${storeHash}.narinfo`)).status).toBe(200);
  }, 30_000);

  test("the holder dies while the waiting replica streams from it: its client's stream breaks, and the retry gets the NAR once the claim is taken over", async () => {
    const nar = await addNar();
    // A holder (with a valid proof) that sends half the NAR and dies.
    const dying = createServer((_, res) => {
      res.writeHead(200, { "content-length": String(SIZE) });
      res.write(nar.bytes.subarray(0, SIZE / 2), () => setTimeout(() => res.socket?.destroy(), 50));
    });
    await new Promise<void>((resolve) => dying.listen(0, "127.0.0.1", resolve));
    const stopDying = () => new Promise<void>((resolve) => {
      dying.closeAllConnections();
      dying.close(() => resolve());
    });
    try {
      const peers = new ReplicaPeers(cacheKey, () => `http://127.0.0.1:${(dying.address() as AddressInfo).port}`);
      expect(await redis.set(`${prefix}download:${nar.key}`, `${crypto.randomUUID()} ${peers.claimNote(nar.key)}`, "PX", 1500, "NX")).toBe("OK");
      const b = replicas[1]!;
      const broken = await fetch(`${b.url}/${nar.key}`);
      expect(broken.status).toBe(200);
      await expect(readDigest(broken)).rejects.toThrow();
      await stopDying(); // dead for good: connections refused until the claim lapses
      expect(await readDigest(await fetch(`${b.url}/${nar.key}`))).toEqual({ status: 200, n: SIZE, hash: nar.fileHash });
      expect(upstream.hits(nar.upstreamPath)).toBe(1);
    } finally {
      if (dying.listening) await stopDying();
    }
  }, 60_000);

  test("the replica route answers only a proof made with the shared secret, and only for a download in flight", async () => {
    const nar = await addNar();
    const a = replicas[0]!;
    const path = `${REPLICA_PREFIX}${nar.key}`;
    expect((await fetch(`${a.url}${path}`)).status).toBe(401);
    const stale = `NcpsReplica ${Date.now() - 120_000}.${Buffer.alloc(32).toString("base64url")}`;
    expect((await fetch(`${a.url}${path}`, { headers: { authorization: stale } })).status).toBe(401);
    const foreign = new ReplicaPeers(generateSecretKey("other"), () => "http://127.0.0.1:1");
    expect((await foreign.fetchFromHolder(a.url, nar.key, AbortSignal.timeout(5000))).status).toBe(401);
    const peers = new ReplicaPeers(cacheKey, () => "http://127.0.0.1:1");
    // nothing in flight: a 404, and no download started by asking
    expect((await peers.fetchFromHolder(a.url, nar.key, AbortSignal.timeout(5000))).status).toBe(404);
    expect(upstream.hits(nar.upstreamPath)).toBe(0);
    // a good proof answers only the NAR and the moment it was made for
    const other = await addNar(1024);
    const forOther = peers.requestProof("GET", `${REPLICA_PREFIX}${other.key}`);
    expect((await fetch(`${a.url}${REPLICA_PREFIX}${other.key}`, { headers: { authorization: forOther } })).status).toBe(404);
    expect((await fetch(`${a.url}${path}`, { headers: { authorization: forOther } })).status).toBe(401);
    const ahead = peers.requestProof("GET", path, Date.now() + 60_000);
    expect((await fetch(`${a.url}${path}`, { headers: { authorization: ahead } })).status).toBe(401);
  }, 30_000);
});
