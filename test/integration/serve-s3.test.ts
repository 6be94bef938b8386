/** ncps serving NARs from S3 (s3rver): a miss goes up to the bucket, a hit comes back as an
 * S3 GET with exact Content-Length, a Range as a ranged S3 GET; a bucket that cannot be used
 * stops start-up with one line. */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNcps, type RunningNcps } from "../../src/compose.ts";
import { loadConfig } from "../../src/config/load.ts";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { buildClosure, createNixEnv, makeKeyPair, nixAvailable, publishCache, storePathHash, type NixEnv } from "../helpers/nix.ts";
import { describeIf, testIf } from "../helpers/prereq.ts";
import { s3rverAvailable, startS3rver, type S3rver } from "../helpers/s3rver.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const test = testIf(nixAvailable && s3rverAvailable, "the real Nix (to make an upstream cache) and s3rver under node are needed");
const T = 120_000;

describeIf(nixAvailable && s3rverAvailable)("ncps serve with S3 storage", () => {
  let nix: NixEnv;
  let work: string;
  let up: Upstream;
  let s3: S3rver;
  let ncps: RunningNcps;
  let paths: string[];
  let upstreamKey: string;

  const s3Args = () => ({
    "cache-storage-s3-bucket": s3.bucket,
    "cache-storage-s3-endpoint": s3.endpoint,
    "cache-storage-s3-access-key-id": s3.accessKeyId,
    "cache-storage-s3-secret-access-key": s3.secretAccessKey,
    "cache-storage-s3-force-path-style": true,
    "cache-storage-s3-prefix": "serve",
  });
  const configWith = (args: Record<string, unknown>) =>
    loadConfig(
      {
        "server-addr": "127.0.0.1:0",
        "cache-hostname": "ncps-test",
        "cache-database-url": `sqlite:${join(work, "db.sqlite")}`,
        "cache-temp-path": join(work, "tmp"),
        "cache-upstream-url": [up.url],
        "cache-upstream-public-key": [upstreamKey],
        ...args,
      },
      {},
    );

  beforeAll(async () => {
    nix = await createNixEnv();
    work = await mkdtemp(join(tmpdir(), "ncps-serve-s3-"));
    const key = await makeKeyPair(nix, "upstream-s3-1");
    upstreamKey = key.publicKey;
    const store = nix.store("upstream");
    // 20 MiB: more than two 8 MiB parts
    const closure = await buildClosure(nix, store, { count: 2, bigBytes: 20 * 1024 * 1024, seed: `serve-s3-${Date.now()}` });
    paths = closure.paths;
    await publishCache(nix, store, paths, join(work, "zstd"), { compression: "zstd", key });
    up = await startUpstream(join(work, "zstd"));
    s3 = await startS3rver();
    ncps = await startNcps(await configWith(s3Args()), silentLogger);
  }, T);

  afterAll(async () => {
    await ncps?.stop();
    await up?.stop();
    await s3?.stop();
    await nix?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const get = (path: string, init?: RequestInit) => fetch(`${ncps.url}/${path}`, init);
  /** ncps sets the exact Content-Length, but Bun.serve 1.4.4 drops it for any stream body
   * and sends it chunked (oven-sh/bun#10507); a length that does get through must be exact. */
  const expectLengthHeader = (res: Response, length: number) => {
    if (res.headers.has("content-length")) expect(res.headers.get("content-length")).toBe(String(length));
    else expect(res.headers.get("transfer-encoding")).toBe("chunked");
  };
  const s3GetsSince = async (n: number) => {
    await s3.settle();
    return s3.requests().slice(n).filter((r) => r.method === "GET" && r.url.includes("x-id=GetObject"));
  };

  test("a NAR goes up to the bucket once verified, then comes back from it, whole and by ranges", async () => {
    for (const path of paths) {
      const ni = parseNarInfo(await (await get(`${storePathHash(path)}.narinfo`)).text());
      const miss = await get(ni.url);
      expect(miss.status).toBe(200);
      const bytes = new Uint8Array(await miss.arrayBuffer());
      expect(bytes.length).toBe(ni.fileSize!);
      await ncps.cache.drain();

      let before = (await s3.settle(), s3.requests().length);
      const hit = await get(ni.url);
      expect(hit.status).toBe(200);
      expectLengthHeader(hit, bytes.length);
      expect(new Uint8Array(await hit.arrayBuffer())).toEqual(bytes);
      expect((await s3GetsSince(before)).map((r) => r.range ?? "whole")).toEqual(["whole"]);

      const mid = Math.floor(bytes.length / 2);
      before = (await s3.settle(), s3.requests().length);
      const resumed = await get(ni.url, { headers: { range: `bytes=${mid}-` } });
      expect(resumed.status).toBe(206);
      expectLengthHeader(resumed, bytes.length - mid);
      expect(resumed.headers.get("content-range")).toBe(`bytes ${mid}-${bytes.length - 1}/${bytes.length}`);
      expect(new Uint8Array(await resumed.arrayBuffer())).toEqual(bytes.subarray(mid));
      const first = await get(ni.url, { headers: { range: "bytes=0-0" } });
      expectLengthHeader(first, 1);
      expect(new Uint8Array(await first.arrayBuffer())).toEqual(bytes.subarray(0, 1));
      expect((await s3GetsSince(before)).map((r) => r.range)).toEqual([`bytes=${mid}-${bytes.length - 1}`, "bytes=0-0"]);

      const head = await get(ni.url, { method: "HEAD" });
      expect(head.headers.get("content-length")).toBe(String(bytes.length));
      expect((await get(ni.url, { headers: { range: `bytes=${bytes.length}-` } })).status).toBe(416);
    }
    // nothing on the local disk but the database and the (empty) temp directory
    expect((await readdir(join(work, "tmp"))).filter((f) => f.startsWith("ncps-"))).toEqual([]);
    await s3.settle();
    expect(s3.openMultipartUploads()).toEqual([]);
    expect(s3.requests().some((r) => r.uploadId !== undefined)).toBe(true);
  }, T);

  test("a bucket that cannot be used stops start-up with one line", async () => {
    const startError = async (args: Record<string, unknown>) => {
      const err = (await startNcps(await configWith(args), silentLogger).then(
        async (running) => {
          await running.stop();
          throw new Error("expected start-up to fail");
        },
        (e: unknown) => e,
      )) as Error;
      expect(err.message).not.toContain("\n");
      return err.message;
    };
    expect(await startError({ ...s3Args(), "cache-storage-s3-bucket": "missing" })).toBe(`storage: S3 bucket missing at ${s3.endpoint} does not exist`);
    expect(await startError({ ...s3Args(), "cache-storage-s3-access-key-id": "nobody" })).toBe(
      `storage: S3 bucket ${s3.bucket} at ${s3.endpoint} refused access: check the access key id and secret access key (HTTP 403)`,
    );
    expect(await startError({ ...s3Args(), "cache-storage-s3-prefix": "a/../b" })).toStartWith("storage: S3 key prefix");
  }, T);
});
