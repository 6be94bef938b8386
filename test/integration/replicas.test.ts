/** Two replicas sharing one database and one storage directory, coordinated through Redis:
 * one upstream download per NAR, whichever replica the clients reach. */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNcps, type RunningNcps } from "../../src/compose.ts";
import { loadConfig } from "../../src/config/load.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { serializeNarInfo } from "../../src/nix/narinfo.ts";
import { formatPublicKey, generateSecretKey, signNarInfo, toPublicKey } from "../../src/nix/signature.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { testIf } from "../helpers/prereq.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const redisUrl = process.env.NCPS_TEST_REDIS_URL;
const test = testIf(redisUrl !== undefined, "NCPS_TEST_REDIS_URL is not set (a Redis server for the replica lock)");
const SIZE = 8 * 1024 * 1024;

describe("replicas sharing database and storage, coordinated through Redis", () => {
  let work: string;
  let upstream: Upstream;
  let replicas: RunningNcps[] = [];
  let storeHash: string;
  let narPath: string;
  let fileHash: string;

  beforeAll(async () => {
    if (redisUrl === undefined) return;
    work = await mkdtemp(join(tmpdir(), "ncps-replicas-"));
    const nar = crypto.getRandomValues(new Uint8Array(SIZE));
    fileHash = `sha256:${encodeNix32(new Bun.CryptoHasher("sha256").update(nar).digest())}`;
    storeHash = encodeNix32(crypto.getRandomValues(new Uint8Array(20)));
    const key = generateSecretKey("replica-upstream-1");
    const narinfo = signNarInfo(
      { storePath: `/nix/store/${storeHash}-blob`, url: `nar/${fileHash.slice(7)}.nar`, compression: "none", fileHash, fileSize: SIZE, narHash: fileHash, narSize: SIZE, references: [], sigs: [], extra: [] },
      key,
    );
    const dir = join(work, "upstream");
    await mkdir(join(dir, "nar"), { recursive: true });
    await Bun.write(join(dir, narinfo.url), nar);
    await writeFile(join(dir, `${storeHash}.narinfo`), serializeNarInfo(narinfo));
    upstream = await startUpstream(dir);
    narPath = `/${narinfo.url}`;

    const redis = new URL(redisUrl);
    const shared = join(work, "shared");
    const prefix = `ncps-test-${crypto.randomUUID()}:`;
    for (const name of ["a", "b"]) {
      const config = await loadConfig(
        {
          "server-addr": "127.0.0.1:0",
          "cache-hostname": "ncps-ha",
          "cache-storage-local": shared,
          "cache-database-url": `sqlite:${join(shared, "db.sqlite")}`,
          "cache-temp-path": join(work, `tmp-${name}`),
          "cache-upstream-url": [upstream.url],
          "cache-upstream-public-key": [formatPublicKey(toPublicKey(key))],
          "cache-redis-addrs": [`${redis.hostname}:${redis.port || "6379"}`],
          "cache-lock-redis-key-prefix": prefix,
        },
        {},
      );
      replicas.push(await startNcps(config, silentLogger));
    }
  }, 60_000);

  afterAll(async () => {
    for (const r of replicas) await r.stop();
    await upstream?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test("8 clients spread over two replicas on one uncached NAR: one upstream download, all verified", async () => {
    upstream.fault(narPath, { kind: "slow", bytesPerSecond: 4 * 1024 * 1024 }); // about 2 s in flight
    const narinfo = await (await fetch(`${replicas[0]!.url}/${storeHash}.narinfo`)).text();
    const url = /^URL: (.*)$/m.exec(narinfo)![1]!;
    const results = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const res = await fetch(`${replicas[i % 2]!.url}/${url}`);
        const h = new Bun.CryptoHasher("sha256");
        let n = 0;
        for await (const chunk of res.body!) {
          h.update(chunk);
          n += chunk.length;
        }
        return { status: res.status, n, hash: `sha256:${encodeNix32(h.digest())}` };
      }),
    );
    for (const r of results) expect(r).toEqual({ status: 200, n: SIZE, hash: fileHash });
    expect(upstream.hits(narPath)).toBe(1);
    // both replicas now serve it from the shared storage
    for (const r of replicas) {
      const again = await fetch(`${r.url}/${url}`);
      expect(Number(again.headers.get("content-length"))).toBe(SIZE);
      await again.arrayBuffer();
    }
    expect(upstream.hits(narPath)).toBe(1);
  }, 60_000);
});
