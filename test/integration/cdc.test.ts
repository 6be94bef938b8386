/** Content-defined chunking (issue 18), end to end over HTTP on real parts: narinfos name the
 * NAR uncompressed from the start; a miss is served decompressed while it downloads; the
 * verified NAR is stored as chunks that two similar NARs share; a hit is reassembled (Range
 * too), or sent as its chunks' zstd frames to a client accepting zstd; turning CDC off leaves
 * chunked NARs servable. (Bun 1.4 sends a streamed body chunked, dropping its Content-Length
 * whatever the handler says: HEAD is where the length is checked.) */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { HotNarInfos } from "../../src/cache/hot-narinfos.ts";
import { StoredNars } from "../../src/cache/stored-nars.ts";
import { GRACE_MS } from "../../src/cache/chunk-store.ts";
import { fsck } from "../../src/cache/fsck.ts";
import { SqliteMetadataStore } from "../../src/db/sqlite.ts";
import { LocalBlobStore } from "../../src/storage/local.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { makeSyntheticCache, sha256Nix32, type SyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";
import { pseudoRandom } from "../helpers/pseudo-random.ts";

let work: string;
let data: string;
let syn: SyntheticCache;
let upstream: Upstream;
let ncps: RunningNcps;
let zstdPath: SyntheticPath;
let plainPath: SyntheticPath;

/** Two versions of one "package": the second has bytes inserted and changed in the middle. */
const v1 = pseudoRandom(2_000_000, 1);
const v2 = Buffer.concat([v1.subarray(0, 900_000), pseudoRandom(3000, 2), v1.subarray(900_000, 1_500_000), pseudoRandom(10, 3), v1.subarray(1_500_010)]);

async function get(url: string, headers: Record<string, string> = {}, method = "GET") {
  const res = await fetch(url, { method, headers, decompress: false });
  return { res, body: new Uint8Array(await res.arrayBuffer()) };
}

async function narUrlOf(path: SyntheticPath): Promise<string> {
  return `${ncps.url}/${parseNarInfo(await (await fetch(`${ncps.url}/${path.hash}.narinfo`)).text()).url}`;
}

async function chunkFiles(): Promise<string[]> {
  const dir = join(data, "chunk");
  const out: string[] = [];
  for (const sub of await readdir(dir).catch(() => [])) for (const f of await readdir(join(dir, sub))) out.push(join(dir, sub, f));
  return out;
}

function start() {
  return startInProcess(data, {
    "cache-upstream-url": [upstream.url],
    "cache-upstream-public-key": [syn.publicKey],
    "cache-database-url": `sqlite:${join(data, "db.sqlite")}`,
    "cache-cdc-enabled": true,
  });
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-cdc-"));
  data = join(work, "data");
  syn = await makeSyntheticCache(join(work, "upstream"));
  zstdPath = await syn.add("pkg-1.0", { nar: v1, compression: "zstd" });
  plainPath = await syn.add("pkg-1.1", { nar: v2, compression: "none" });
  upstream = await startUpstream(syn.dir);
  ncps = await start();
});

afterAll(async () => {
  await ncps?.stop();
  await upstream?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("a CDC-enabled cache", () => {
  test("narinfos name the NAR uncompressed from the start, signed by ncps", async () => {
    for (const path of [zstdPath, plainPath]) {
      const narinfo = parseNarInfo(await (await fetch(`${ncps.url}/${path.hash}.narinfo`)).text());
      expect(narinfo.compression).toBe("none");
      expect(narinfo.url).toMatch(/^nar\/[0-9a-z]{52}\.nar$/);
      expect(narinfo.fileHash).toBeUndefined();
      expect(narinfo.fileSize).toBeUndefined();
      expect(narinfo.narHash).toBe(path.narinfo.narHash);
      expect(narinfo.sigs.some((s) => s.startsWith("ncps-test"))).toBe(true);
    }
  });

  test("a miss is served decompressed as it downloads; the verified NAR is stored as chunks", async () => {
    const zstdMiss = await get(await narUrlOf(zstdPath));
    expect(zstdMiss.res.status).toBe(200);
    expect(sha256Nix32(zstdMiss.body)).toBe(zstdPath.narinfo.narHash);
    const plainMiss = await get(await narUrlOf(plainPath));
    expect(sha256Nix32(plainMiss.body)).toBe(plainPath.narinfo.narHash);
    await ncps.cache.drain();

    // nothing stored under the NAR keys: the bytes are the chunks'
    expect(await readdir(join(data, "nar")).catch(() => [])).toEqual([]);
    const files = await chunkFiles();
    const db = new Database(join(data, "db.sqlite"), { readonly: true });
    try {
      const perNar = db.prepare("SELECT nar_key, COUNT(*) AS n FROM nar_chunks GROUP BY nar_key").all() as { n: number }[];
      expect(perNar).toHaveLength(2);
      const total = perNar.reduce((n, r) => n + r.n, 0);
      // the second version shares all but the chunks around its two edits
      expect(files.length).toBeLessThanOrEqual(total / 2 + 4);
      const stored = (await Promise.all(files.map((f) => stat(f)))).reduce((n, s) => n + s.size, 0);
      expect((db.prepare("SELECT value FROM stats WHERE name = 'stored_bytes'").get() as { value: number }).value).toBe(stored);
      expect(stored).toBeLessThan(v1.length * 1.1); // two NARs of 2 MB in about the room of one
    } finally {
      db.close();
    }
  });

  test("a hit is reassembled from its chunks, with Range, and HEAD says the same", async () => {
    for (const [path, nar] of [[zstdPath, v1], [plainPath, v2]] as const) {
      const url = await narUrlOf(path);
      const whole = await get(url, { "accept-encoding": "identity" });
      expect(whole.res.status).toBe(200);
      expect(whole.res.headers.get("content-encoding")).toBeNull();
      expect(sha256Nix32(whole.body)).toBe(path.narinfo.narHash);

      const ranged = await get(url, { range: "bytes=70000-1300000" });
      expect(ranged.res.status).toBe(206);
      expect(ranged.res.headers.get("content-range")).toBe(`bytes 70000-1300000/${nar.length}`);
      expect(Buffer.from(ranged.body).equals(Buffer.from(nar.subarray(70000, 1300001)))).toBe(true);
      const tail = await get(url, { range: "bytes=-5" });
      expect(Buffer.from(tail.body).equals(Buffer.from(nar.subarray(nar.length - 5)))).toBe(true);

      const head = await get(url, { "accept-encoding": "identity" }, "HEAD");
      expect(Number(head.res.headers.get("content-length"))).toBe(nar.length);
      const zstdHead = await get(url, { "accept-encoding": "zstd" }, "HEAD");
      expect(zstdHead.res.headers.get("content-encoding")).toBe("zstd");
      expect(Number(zstdHead.res.headers.get("content-length"))).toBe((await get(url, { "accept-encoding": "zstd" })).body.length);
    }
  });

  test("a client accepting zstd (Nix, by its User-Agent) gets the chunks' frames as stored, one zstd stream", async () => {
    const url = await narUrlOf(plainPath);
    for (const headers of [{ "accept-encoding": "zstd" }, { "user-agent": "curl/8.0 Nix/2.8.1" }] as Record<string, string>[]) {
      const { res, body } = await get(url, headers);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-encoding")).toBe("zstd");
      expect(sha256Nix32(Bun.zstdDecompressSync(body))).toBe(plainPath.narinfo.narHash);
    }
  });

  test("turned off, the chunked NARs are still served", async () => {
    await ncps.stop();
    ncps = await startInProcess(data, {
      "cache-upstream-url": [upstream.url],
      "cache-upstream-public-key": [syn.publicKey],
      "cache-database-url": `sqlite:${join(data, "db.sqlite")}`,
    });
    const { res, body } = await get(await narUrlOf(zstdPath), { "accept-encoding": "identity" });
    expect(res.status).toBe(200);
    expect(sha256Nix32(body)).toBe(zstdPath.narinfo.narHash);
  });

  test("removing a chunked NAR frees the chunks no other NAR holds, once past their grace; the other NAR stays whole", async () => {
    await ncps.stop();
    const db = new SqliteMetadataStore(join(data, "db.sqlite"));
    const nars = new StoredNars({ db, store: new LocalBlobStore(data), hot: new HotNarInfos(), logger: silentLogger });
    try {
      const key = parseNarInfo((await db.getNarInfoText(plainPath.hash))!).url;
      const v2Chunks = await db.narChunks(key);
      await nars.remove(key);
      // within the grace nothing goes (a commit may be about to rely on them)
      expect(await nars.chunks.sweep()).toEqual({ chunks: 0, bytes: 0 });
      const swept = await nars.chunks.sweep(Date.now() + GRACE_MS + 1000);
      const v1Chunks = new Set((await db.narChunks(parseNarInfo((await db.getNarInfoText(zstdPath.hash))!).url)).map((c) => c.hash));
      const onlyV2 = [...new Map(v2Chunks.filter((c) => !v1Chunks.has(c.hash)).map((c) => [c.hash, c])).values()];
      expect(swept.chunks).toBe(onlyV2.length);
      expect(swept.bytes).toBe(onlyV2.reduce((n, c) => n + c.size, 0));
      const files = await chunkFiles();
      expect(files.length).toBe(v1Chunks.size);
      expect(await db.storedBytes()).toBe((await Promise.all(files.map((f) => stat(f)))).reduce((n, st) => n + st.size, 0));
    } finally {
      await db.close();
    }
    ncps = await start();
    const { body } = await get(await narUrlOf(zstdPath), { "accept-encoding": "identity" });
    expect(sha256Nix32(body)).toBe(zstdPath.narinfo.narHash);
  });

  test("fsck: chunked NARs check out (--verify-content re-hashes chunks and NARs); a lost chunk is found and its NAR forgotten, then fetched again", async () => {
    await ncps.stop();
    const db = new SqliteMetadataStore(join(data, "db.sqlite"));
    const store = new LocalBlobStore(data);
    const nars = new StoredNars({ db, store, hot: new HotNarInfos(), logger: silentLogger });
    const run = (repair: boolean) =>
      fsck({ db, store, nars, upstreams: [upstream.url], staleTempFiles: async () => [], strayGraceMs: 0, verifyContent: true, repair });
    try {
      const clean = await run(false);
      expect(clean.problems).toEqual([]);
      const key = parseNarInfo((await db.getNarInfoText(zstdPath.hash))!).url;
      const [lost] = await db.narChunks(key);
      await rm(join(data, "chunk", lost!.hash.slice(0, 2), lost!.hash));
      const found = await run(false);
      expect(found.problems.map((p) => [p.check, p.subject])).toContainEqual(["nar-bytes-missing", key]);
      expect(found.remaining).toBeGreaterThan(0);
      const repaired = await run(true);
      expect(repaired.remaining).toBe(0);
      expect(await db.getNar(key)).toBeNull();
      expect((await run(false)).problems).toEqual([]);
    } finally {
      await db.close();
    }
    ncps = await start();
    const { body } = await get(await narUrlOf(zstdPath), { "accept-encoding": "identity" });
    expect(sha256Nix32(body)).toBe(zstdPath.narinfo.narHash);
  });
});
