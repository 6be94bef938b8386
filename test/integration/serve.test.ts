/** ncps between real upstream binary caches (made by the real Nix) and HTTP clients:
 * the narinfo and NAR paths, their miss paths, and the faults ncps must survive. */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNcps, type RunningNcps } from "../../src/compose.ts";
import { loadConfig } from "../../src/config/load.ts";
import type { MetadataStore } from "../../src/db/metadata-store.ts";
import { openMetadataStore } from "../../src/db/open.ts";
import { canonicalHash } from "../../src/nix/hash.ts";
import { readDigest, sha256Nix32 } from "../helpers/synthetic-cache.ts";
import { parseNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { parsePublicKey, verifyNarInfo } from "../../src/nix/signature.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { buildClosure, createNixEnv, makeKeyPair, nixAvailable, publishCache, storePathHash, type NixEnv } from "../helpers/nix.ts";
import { describeIf, testIf } from "../helpers/prereq.ts";
import { startStoppedPort, startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const test = testIf(nixAvailable, "the real Nix (nix-bin) is needed to make upstream caches");
const T = 120_000;


describeIf(nixAvailable)("ncps serve against real upstreams", () => {
  let nix: NixEnv;
  let work: string;
  let zstdUp: Upstream; // 10-path closure + a 64 MiB path
  let xzUp: Upstream;
  let noneUp: Upstream;
  let zstdPaths: string[];
  let bigPath: string;
  let stallPath: string; // a second large path, for the stalled-client test
  let rangePath: string; // a third large path, for Range during a download
  let xzPaths: string[];
  let nonePaths: string[];
  let ncps: RunningNcps;
  let db: MetadataStore;
  let dataDir: string;
  let ncpsKey: ReturnType<typeof parsePublicKey>;
  let upstreamKey: string;

  beforeAll(async () => {
    nix = await createNixEnv();
    work = await mkdtemp(join(tmpdir(), "ncps-serve-"));
    const key = await makeKeyPair(nix, "upstream-test-1");
    upstreamKey = key.publicKey;
    const store = nix.store("upstream");
    const big = await buildClosure(nix, store, { count: 10, bigBytes: 64 * 1024 * 1024, seed: "serve-zstd" });
    const small = await buildClosure(nix, store, { count: 3, seed: "serve-xz" });
    const plain = await buildClosure(nix, store, { count: 3, seed: "serve-none" });
    const stall = await buildClosure(nix, store, { count: 1, bigBytes: 32 * 1024 * 1024, seed: "serve-stall" });
    stallPath = stall.big!;
    const ranged = await buildClosure(nix, store, { count: 1, bigBytes: 16 * 1024 * 1024, seed: "serve-range" });
    rangePath = ranged.big!;
    zstdPaths = big.paths;
    bigPath = big.big!;
    xzPaths = small.paths;
    nonePaths = plain.paths;
    await publishCache(nix, store, [...zstdPaths, ...stall.paths, ...ranged.paths], join(work, "zstd"), { compression: "zstd", key });
    await publishCache(nix, store, xzPaths, join(work, "xz"), { compression: "xz", key });
    await publishCache(nix, store, nonePaths, join(work, "none"), { compression: "none", key });
    zstdUp = await startUpstream(join(work, "zstd"));
    xzUp = await startUpstream(join(work, "xz"));
    noneUp = await startUpstream(join(work, "none"));
    const down = await startStoppedPort();

    dataDir = join(work, "ncps");
    const config = await loadConfig(
      {
        "server-addr": "127.0.0.1:0",
        "cache-hostname": "ncps-test",
        "cache-storage-local": dataDir,
        "cache-temp-path": join(dataDir, "tmp"),
        "cache-upstream-url": [down.url, zstdUp.url, xzUp.url, noneUp.url],
        "cache-upstream-public-key": [key.publicKey],
        "cache-upstream-dialer-timeout": "1s",
        "cache-upstream-response-header-timeout": "2s",
        "cache-upstream-negative-ttl": "0s",
      },
      {},
    );
    ncps = await startNcps(config, silentLogger);
    ncpsKey = parsePublicKey(ncps.publicKey);
    db = await openMetadataStore(config.cacheDatabaseUrl);
  }, T);

  afterAll(async () => {
    await ncps?.stop();
    await db?.close();
    await Promise.all([zstdUp, xzUp, noneUp].map((u) => u?.stop()));
    await nix?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  const get = (path: string, init?: RequestInit) => fetch(`${ncps.url}/${path}`, init);
  async function narInfoOf(storePath: string): Promise<NarInfo> {
    const res = await get(`${storePathHash(storePath)}.narinfo`);
    expect(res.status).toBe(200);
    return parseNarInfo(await res.text());
  }
  const upstreamNarPath = async (up: Upstream, storePath: string) =>
    "/" + /^URL: (.*)$/m.exec(await Bun.file(join(up.dir, `${storePathHash(storePath)}.narinfo`)).text())![1]!;
  const storedFiles = async () => (await readdir(join(dataDir, "nar")).catch(() => [] as string[])).sort();
  const tempFiles = async () => (await readdir(join(dataDir, "tmp")).catch(() => [] as string[])).filter((f) => f.startsWith("ncps-"));

  test("narinfo: rewritten to ncps's NAR URL, signed by ncps, upstream signature kept", async () => {
    for (const path of zstdPaths) {
      const res = await get(`${storePathHash(path)}.narinfo`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("text/x-nix-narinfo");
      const text = await res.text();
      expect(Number(res.headers.get("content-length"))).toBe(Buffer.byteLength(text));
      const ni = parseNarInfo(text);
      expect(ni.storePath).toBe(path);
      expect(ni.url).toMatch(/^nar\/[0-9a-df-np-sv-z]{52}\.nar\.zst$/);
      expect(verifyNarInfo(ni, [ncpsKey])).toBe(true);
      expect(verifyNarInfo(ni, [parsePublicKey(upstreamKey)])).toBe(true);
    }
  }, T);

  test("a narinfo lookup or a HEAD does not download the NAR", async () => {
    const path = nonePaths[0]!;
    const narPath = await upstreamNarPath(noneUp, path);
    const head = await get(`${storePathHash(path)}.narinfo`, { method: "HEAD" });
    expect(head.status).toBe(200);
    const ni = await narInfoOf(path);
    const headNar = await get(ni.url, { method: "HEAD" });
    expect(headNar.status).toBe(200);
    expect(Number(headNar.headers.get("content-length"))).toBe(ni.fileSize ?? ni.narSize);
    // A download is registered as in flight before the request that claimed it is answered,
    // so drain() now waits for any download the HEADs started; then look at the upstream
    // and the database.
    await ncps.cache.drain();
    expect(noneUp.hits(narPath)).toBe(0);
    expect(await db.getNar(ni.url)).toBeNull();
  }, T);

  test("NAR miss then hit: verified bytes, fetched from upstream once, exact length and ranges", async () => {
    for (const [up, path] of [
      [xzUp, xzPaths[1]!],
      [noneUp, nonePaths[1]!],
      [zstdUp, zstdPaths[1]!],
    ] as const) {
      const ni = await narInfoOf(path);
      const first = new Uint8Array(await (await get(ni.url)).arrayBuffer());
      expect(sha256Nix32(first)).toBe(canonicalHash(ni.fileHash ?? ni.narHash));
      await ncps.cache.drain();
      // as it is: an uncompressed NAR goes zstd-encoded to a client accepting that (nar-zstd.test.ts)
      const second = await get(ni.url, { headers: { "accept-encoding": "identity" } });
      expect(second.status).toBe(200);
      expect(second.headers.get("content-type")).toBe("application/x-nix-nar");
      expect(second.headers.get("accept-ranges")).toBe("bytes");
      // Decompressed on the fly (Vary), the body is chunked: Bun.serve drops a Content-Length
      // set on a transformed stream.
      const onTheFly = second.headers.get("vary") === "Accept-Encoding, User-Agent";
      expect(second.headers.get("content-length")).toBe(onTheFly ? null : String(first.length));
      expect(new Uint8Array(await second.arrayBuffer())).toEqual(first);
      expect(up.hits(await upstreamNarPath(up, path))).toBe(1);
      expect(await db.getNar(ni.url)).not.toBeNull();

      const mid = Math.floor(first.length / 2);
      const ranged = await get(ni.url, { headers: { range: `bytes=${mid}-` } });
      expect(ranged.status).toBe(206);
      expect(ranged.headers.get("content-range")).toBe(`bytes ${mid}-${first.length - 1}/${first.length}`);
      expect(new Uint8Array(await ranged.arrayBuffer())).toEqual(first.subarray(mid));
      const bad = await get(ni.url, { headers: { range: `bytes=${first.length}-` } });
      expect(bad.status).toBe(416);
    }
  }, T);

  test("8 concurrent clients on one uncached large NAR: one upstream download, identical verified bytes", async () => {
    const ni = await narInfoOf(bigPath);
    const narPath = await upstreamNarPath(zstdUp, bigPath);
    zstdUp.fault(narPath, { kind: "slow", bytesPerSecond: 64 * 1024 * 1024 }); // keep it in flight while clients join
    try {
      const results = await Promise.all(
        Array.from({ length: 8 }, async () => {
          return readDigest(await get(ni.url));
        }),
      );
      for (const r of results) {
        expect(r.status).toBe(200);
        expect(r.n).toBe(ni.fileSize!);
        expect(r.hash).toBe(canonicalHash(ni.fileHash!));
      }
      expect(zstdUp.hits(narPath)).toBe(1);
    } finally {
      zstdUp.fault(narPath, null);
    }
  }, T);

  test("a client that stalls or leaves neither slows nor stops the download", async () => {
    const ni = await narInfoOf(stallPath);
    const narPath = await upstreamNarPath(zstdUp, stallPath);
    zstdUp.fault(narPath, { kind: "slow", bytesPerSecond: 16 * 1024 * 1024 }); // about 2 s in flight
    try {
      const leaving = new AbortController();
      const leaver = await get(ni.url, { signal: leaving.signal });
      const stalled = await get(ni.url); // never read
      expect(stalled.status).toBe(200);
      const reader = leaver.body!.getReader();
      await reader.read();
      leaving.abort();
      const full = new Uint8Array(await (await get(ni.url)).arrayBuffer());
      expect(sha256Nix32(full)).toBe(canonicalHash(ni.fileHash!));
      await ncps.cache.drain();
      expect(await db.getNar(ni.url)).not.toBeNull();
      await stalled.body?.cancel();
    } finally {
      zstdUp.fault(narPath, null);
    }
    expect(zstdUp.hits(narPath)).toBe(1);
  }, T);

  test("Range on a NAR still downloading: 206 with exactly those bytes, one upstream download", async () => {
    const ni = await narInfoOf(rangePath);
    const narPath = await upstreamNarPath(zstdUp, rangePath);
    const size = ni.fileSize!;
    zstdUp.fault(narPath, { kind: "slow", bytesPerSecond: 4 * 1024 * 1024 }); // about 4 s in flight
    try {
      const first = await get(ni.url); // starts the download
      expect(first.status).toBe(200);
      const start = Math.floor(size / 3) + 7; // not on a chunk boundary
      const ranged = await get(ni.url, { headers: { range: `bytes=${start}-` } });
      expect(ranged.status).toBe(206);
      expect(ranged.headers.get("content-range")).toBe(`bytes ${start}-${size - 1}/${size}`);
      // No Content-Length check: Bun.serve frames a streamed body chunked (oven-sh/bun#10507).
      // Still downloading (seconds to go): the range is served from the growing file, not storage.
      expect(await db.getNar(ni.url)).toBeNull();
      const tail = new Uint8Array(await ranged.arrayBuffer());
      const full = new Uint8Array(await first.arrayBuffer());
      expect(sha256Nix32(full)).toBe(canonicalHash(ni.fileHash!));
      expect(tail.length).toBe(size - start);
      expect(Buffer.from(tail).equals(Buffer.from(full.subarray(start)))).toBe(true);
      await ncps.cache.drain();
      expect(await db.getNar(ni.url)).not.toBeNull();
    } finally {
      zstdUp.fault(narPath, null);
    }
    expect(zstdUp.hits(narPath)).toBe(1);
  }, T);

  for (const fault of [
    { name: "the upstream cuts the body", fault: { kind: "cut", afterBytes: 1000 } as const },
    { name: "the upstream sends the right length of wrong bytes", fault: { kind: "corrupt" } as const },
  ]) {
    test(`${fault.name}: the client sees an error, nothing is recorded, the next request succeeds`, async () => {
      const path = zstdPaths[2 + (fault.fault.kind === "cut" ? 0 : 1)]!;
      const ni = await narInfoOf(path);
      const narPath = await upstreamNarPath(zstdUp, path);
      const before = await storedFiles();
      zstdUp.fault(narPath, fault.fault);
      try {
        // A small body may fail before its headers leave; a large one mid-body. Either way the
        // client must see an error, never a clean end.
        await expect((async () => (await get(ni.url)).arrayBuffer())()).rejects.toThrow();
        await ncps.cache.drain();
        expect(await db.getNar(ni.url)).toBeNull();
        expect(await storedFiles()).toEqual(before);
        expect(await tempFiles()).toEqual([]);
      } finally {
        zstdUp.fault(narPath, null);
      }
      const again = new Uint8Array(await (await get(ni.url)).arrayBuffer());
      expect(sha256Nix32(again)).toBe(canonicalHash(ni.fileHash!));
      await ncps.cache.drain();
      expect(await db.getNar(ni.url)).not.toBeNull();
    }, T);
  }

  for (const fault of [{ kind: "status", status: 500 } as const, { kind: "hang" } as const]) {
    test(`an upstream that ${fault.kind === "hang" ? "never answers" : "answers 500"}: narinfo 404 within the timeout`, async () => {
      const path = xzPaths[fault.kind === "hang" ? 0 : 2]!;
      xzUp.fault(/\.narinfo$/, fault);
      try {
        const res = await get(`${storePathHash(path)}.narinfo`);
        expect(res.status).toBe(404);
        expect(xzUp.hits(`${storePathHash(path)}.narinfo`)).toBeGreaterThan(0); // asked, and given up on
        expect(await db.getNarInfo(storePathHash(path))).toBeNull();
      } finally {
        xzUp.fault(/\.narinfo$/, null);
      }
    }, 15_000); // the bound: dialer 1 s + response header 2 s, far below the client's patience
  }

  test("malformed hashes and traversal get 400/404 and touch nothing", async () => {
    const requestsBefore = [zstdUp, xzUp, noneUp].map((u) => u.requests.length);
    const filesBefore = await storedFiles();
    const cases: [string, number[]][] = [
      ["abc.narinfo", [400]],
      ["eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo", [400]], // 'e' is not in the nix32 alphabet
      ["nar/zzzz.nar.xz", [400]],
      ["nar/0fn02ls73n5ndgvvclll1lkg0viq4cbmhx8xcgr5flmzrcvjiarn.nar.bogus", [400]],
      ["nar/%2e%2e/%2e%2e/etc/passwd", [400, 404]],
      ["nar/..%2f..%2fetc%2fpasswd", [400, 404]],
    ];
    for (const [path, statuses] of cases) {
      const res = await get(path);
      expect(statuses).toContain(res.status);
      expect((await res.text()).split("\n").filter(Boolean).length).toBe(1);
    }
    // Raw request line, not normalised by a client.
    for (const raw of ["/nar/../../../etc/passwd", "/../../etc/passwd", "/nar/..%2F..%2Fetc%2Fpasswd"]) {
      const status = await rawStatus(new URL(ncps.url), raw);
      expect([400, 404]).toContain(status);
    }
    expect([zstdUp, xzUp, noneUp].map((u) => u.requests.length)).toEqual(requestsBefore);
    expect(await storedFiles()).toEqual(filesBefore);
  }, T);

  test("a path no upstream has is 404", async () => {
    const res = await get("00000000000000000000000000000000.narinfo");
    expect(res.status).toBe(404);
  }, T);
});

async function rawStatus(url: URL, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname, () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${url.host}\r\nConnection: close\r\n\r\n`);
    });
    let data = "";
    socket.on("data", (d) => (data += d.toString()));
    socket.on("end", () => resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(data)?.[1] ?? 0)));
    socket.on("error", reject);
  });
}
