/** The cache domain built from its real parts (SQLite in a temp directory, local blob storage,
 * the upstream pool, a signing key) against an HTTP upstream of synthetic signed NARs: the
 * miss, fan-out, verification, claim and delete paths without the Nix client or a server
 * database. Each test builds its own domain and upstream; nothing is shared between tests. */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Cache, type NarSource } from "../../src/cache/cache.ts";
import { HotNarInfos } from "../../src/cache/hot-narinfos.ts";
import { Uploads } from "../../src/cache/uploads.ts";
import type { MetadataStore } from "../../src/db/metadata-store.ts";
import { openMetadataStore } from "../../src/db/open.ts";
import { MemoryLocker } from "../../src/lock/memory.ts";
import { StoredNars } from "../../src/cache/stored-nars.ts";
import { parseNcpsNarRequest, type NcpsNarRequest } from "../../src/nix/nar-url.ts";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { getNar } from "../../src/server/nar.ts";
import { generateSecretKey, parsePublicKey, toPublicKey, verifyNarInfo } from "../../src/nix/signature.ts";
import { LocalBlobStore } from "../../src/storage/local.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { UpstreamPool } from "../../src/upstream/pool.ts";
import { Upstream } from "../../src/upstream/upstream.ts";
import { makeSyntheticCache, type SyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream as TestUpstream } from "../helpers/upstream-server.ts";

/** Cleanups of the running test, run (last first) after it whatever its outcome. */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => {});
});

interface Domain {
  cache: Cache;
  uploads: Uploads;
  db: MetadataStore;
  store: LocalBlobStore;
  tempDir: string;
}

/** One cache domain wired as src/compose.ts wires it, on `root`; with `downloadLock`, a lock shared
 * with other domains over the same database and storage. */
async function domain(root: string, upstreamUrl: string, upstreamKey: string, downloadLock = { locker: new MemoryLocker(), ttlMs: 60_000 }): Promise<Domain> {
  await mkdir(join(root, "storage"), { recursive: true });
  const tempDir = await mkdtemp(join(root, "temp-"));
  const store = new LocalBlobStore(join(root, "storage"));
  await store.check();
  const db = await openMetadataStore(`sqlite:${join(root, "db.sqlite")}`, { migrate: true });
  const upstream = new Upstream(upstreamUrl, 0, { headerTimeoutMs: 5000, logger: silentLogger });
  const pool = new UpstreamPool([upstream], { trustedKeys: [parsePublicKey(upstreamKey)], negativeTtlMs: 60_000, logger: silentLogger });
  const hot = new HotNarInfos();
  const nars = new StoredNars({ db, store, hot, logger: silentLogger });
  const shared = { db, nars, pool, signingKey: generateSecretKey("ncps-test-1"), signNarInfo: true, tempDir, hot, logger: silentLogger };
  const cache = new Cache({ ...shared, priority: 40, downloadLock });
  const uploads = new Uploads({ ...shared, store, locker: downloadLock.locker, maxUploadBytes: 64 * 1024 * 1024, acceptUnverifiedCompression: false, trustedUploadKeys: null });
  cleanups.push(async () => {
    await cache.close();
    await db.close();
  });
  return { cache, uploads, db, store, tempDir };
}

/** A temp directory, a synthetic upstream serving it, and one domain in front of it. */
async function fixture() {
  const root = await mkdtemp(join(tmpdir(), "ncps-domain-"));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  const synthetic: SyntheticCache = await makeSyntheticCache(join(root, "upstream"));
  const upstream: TestUpstream = await startUpstream(synthetic.dir);
  cleanups.push(() => upstream.stop());
  const ncps = await domain(join(root, "ncps"), upstream.url, synthetic.publicKey);
  return { root, synthetic, upstream, ...ncps };
}

/** The NAR request named by the narinfo ncps serves for `path` (fetching it if need be). */
async function narRequest(cache: Cache, path: SyntheticPath): Promise<NcpsNarRequest> {
  const text = await cache.narInfo(path.hash);
  if (text === null) throw new Error(`no narinfo for ${path.hash}`);
  return parseNcpsNarRequest(parseNarInfo(Buffer.from(text).toString()).url);
}

/** Every byte a source gives, or the error that ended it. */
async function readAll(source: NarSource): Promise<Uint8Array | Error> {
  try {
    const { body } = await source.open();
    return new Uint8Array(await new Response(body).arrayBuffer());
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/** Reads a source until its first bytes arrive (the download is under way), then keeps
 * reading to the end in the background. */
async function readerUnderWay(source: NarSource): Promise<{ rest: Promise<Uint8Array | Error> }> {
  const { body } = await source.open();
  const reader = (body as ReadableStream<Uint8Array>).getReader();
  const first = await reader.read();
  if (first.done) throw new Error("ended before any byte");
  const rest = (async () => {
    const parts = [first.value];
    try {
      for (;;) {
        const next = await reader.read();
        if (next.done) return new Uint8Array(Buffer.concat(parts));
        parts.push(next.value);
      }
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  })();
  return { rest };
}

function narPath(path: SyntheticPath) {
  return `/${path.narinfo.url}`;
}

/** A promise the test resolves when it chooses. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

describe("cache domain", () => {
  test("a narinfo miss asks the upstream once, then is a hit signed by ncps", async () => {
    const { cache, synthetic, upstream, db } = await fixture();
    const path = await synthetic.add("hello-2.12");
    const first = await cache.narInfo(path.hash);
    const second = await cache.narInfo(path.hash);
    expect(first).not.toBeNull();
    expect(Buffer.from(second!).toString()).toBe(Buffer.from(first!).toString());
    expect(upstream.hits(`/${path.hash}.narinfo`)).toBe(1);
    const served = parseNarInfo(Buffer.from(first!).toString());
    expect(served.storePath).toBe(path.storePath);
    expect(served.narHash).toBe(path.narinfo.narHash);
    expect(verifyNarInfo(served, [parsePublicKey(cache.publicKey)])).toBe(true);
    expect(await db.getNarInfoText(path.hash)).toBe(Buffer.from(first!).toString());
  });

  test("a narinfo no upstream has is null, and the miss is remembered", async () => {
    const { cache, upstream } = await fixture();
    const absent = "0".repeat(32);
    expect(await cache.narInfo(absent)).toBeNull();
    expect(await cache.narInfo(absent)).toBeNull();
    expect(upstream.hits(`/${absent}.narinfo`)).toBe(1);
  });

  test("several readers of one uncached NAR: one upstream download, the same verified bytes, then stored", async () => {
    const { cache, synthetic, upstream, db, store } = await fixture();
    const path = await synthetic.add("fan-out", { size: 512 * 1024, compression: "zstd" });
    const req = await narRequest(cache, path);
    const release = gate();
    upstream.fault(narPath(path), { kind: "hold", afterBytes: Math.floor(path.file.length / 2), until: release.opened });

    const first = await readerUnderWay((await cache.nar(req, { startDownload: true }))!);
    const joined = await Promise.all([1, 2, 3].map(async () => readerUnderWay((await cache.nar(req, { startDownload: true }))!)));
    expect(await db.getNar(req.key)).toBeNull(); // still in flight: nothing recorded yet
    release.open();
    const results = await Promise.all([first, ...joined].map((r) => r.rest));
    for (const bytes of results) expect(bytes).toEqual(path.file);
    await cache.drain();

    expect(upstream.hits(narPath(path))).toBe(1);
    expect(await db.getNar(req.key)).toMatchObject({ key: req.key, size: path.file.length });
    expect((await store.stat(req.key))?.size).toBe(path.file.length);
    expect(await readAll((await cache.nar(req, { startDownload: true }))!)).toEqual(path.file);
    expect(upstream.hits(narPath(path))).toBe(1); // the stored copy, not a second download
  });

  test("a corrupt NAR body: every reader errors, nothing is recorded, and the next request succeeds", async () => {
    const { cache, synthetic, upstream, db, store, tempDir } = await fixture();
    const path = await synthetic.add("corrupt", { size: 256 * 1024 });
    const req = await narRequest(cache, path);
    upstream.fault(narPath(path), { kind: "corrupt" });

    const sources = await Promise.all([1, 2, 3].map(async () => (await cache.nar(req, { startDownload: true }))!));
    const results = await Promise.all(sources.map(readAll));
    for (const r of results) expect(String(r)).toContain("NAR verification failed");
    await cache.drain();
    expect(await db.getNar(req.key)).toBeNull();
    expect(await store.stat(req.key)).toBeNull();
    expect(await readdir(tempDir)).toEqual([]);

    upstream.fault(narPath(path), null);
    expect(await readAll((await cache.nar(req, { startDownload: true }))!)).toEqual(path.file);
    await cache.drain();
    expect(await db.getNar(req.key)).toMatchObject({ key: req.key });
    expect(upstream.hits(narPath(path))).toBe(2);
  });

  test("a NAR whose verification fails only at the very end: no reader ever gets a complete body", async () => {
    const { cache, synthetic, db } = await fixture();
    // FileHash and FileSize are right, so every byte arrives and passes those checks; only the
    // NarHash, known once the last byte is decompressed, is wrong.
    const wrongNarHash = `sha256:${"1".repeat(52)}`;
    for (const compression of ["none", "zstd"] as const) {
      const path = await synthetic.add(`late-failure-${compression}`, { size: 1024 * 1024, compression, edit: (n) => ({ ...n, narHash: wrongNarHash }) });
      const req = await narRequest(cache, path);
      const bodies = await Promise.all([1, 2].map(async () => (await (await cache.nar(req, { startDownload: true }))!.open()).body));
      const end = { start: path.file.length - 10, end: path.file.length - 1 };
      bodies.push((await (await cache.nar(req, { startDownload: true }))!.open(end)).body);
      for (const [i, body] of bodies.entries()) {
        const want = i < 2 ? path.file.length : 10;
        let got = 0;
        let error: unknown = null;
        try {
          for await (const chunk of body as ReadableStream<Uint8Array>) got += chunk.length;
        } catch (err) {
          error = err;
        }
        // A client that got every byte would see a complete response, whatever came after.
        expect(got).toBeLessThan(want);
        expect(String(error)).toContain("NarHash");
      }
      await cache.drain();
      expect(await db.getNar(req.key)).toBeNull();
    }
  });

  test("concurrent requests for one NAR claim one download", async () => {
    const { cache, synthetic, upstream, db } = await fixture();
    const path = await synthetic.add("claim", { size: 128 * 1024 });
    const req = await narRequest(cache, path);
    const sources = await Promise.all(Array.from({ length: 8 }, () => cache.nar(req, { startDownload: true })));
    const results = await Promise.all(sources.map((s) => readAll(s!)));
    await cache.drain();
    for (const r of results) expect(r).toEqual(path.file);
    expect(upstream.hits(narPath(path))).toBe(1);
    expect(await db.getNar(req.key)).toMatchObject({ key: req.key });
  });

  test("replicas sharing a lock, database and storage claim one download between them", async () => {
    const { root, cache, synthetic, upstream } = await fixture();
    const path = await synthetic.add("replicas", { size: 128 * 1024 });
    const req = await narRequest(cache, path);
    // A second domain on the same database and storage, both coordinating through one lock.
    const locker = new MemoryLocker();
    cleanups.push(() => locker.close());
    const a = await domain(join(root, "ncps"), upstream.url, synthetic.publicKey, { locker, ttlMs: 60_000 });
    const b = await domain(join(root, "ncps"), upstream.url, synthetic.publicKey, { locker, ttlMs: 60_000 });
    const release = gate();
    upstream.fault(narPath(path), { kind: "hold", afterBytes: 1024, until: release.opened });

    const fromA = await readerUnderWay((await a.cache.nar(req, { startDownload: true }))!);
    const fromB = b.cache.nar(req, { startDownload: true }).then((s) => readAll(s!)); // waits for A's copy
    release.open();
    expect(await fromA.rest).toEqual(path.file);
    expect(await fromB).toEqual(path.file);
    expect(upstream.hits(narPath(path))).toBe(1);
  });

  test("a NAR stored zstd-compressed, sent whole and decompressed: no narinfo lookup for its size, which only HEAD and Range need", async () => {
    const { cache, synthetic, db } = await fixture();
    const text = Array.from({ length: 20_000 }, (_, i) => `line ${i}\n`).join("");
    const path = await synthetic.add("stored-zstd", { nar: new TextEncoder().encode(text) });
    const req = await narRequest(cache, path);
    expect(await readAll((await cache.nar(req, { startDownload: true }))!)).toEqual(path.nar);
    await cache.drain();
    // the real store, its one method counted
    let lookups = 0;
    const narInfosForNar = db.narInfosForNar.bind(db);
    db.narInfosForNar = (key) => (lookups++, narInfosForNar(key));
    const serve = getNar(cache);
    const get = (headers: Record<string, string>, head = false) =>
      serve({ req: new Request(`http://ncps${narPath(path)}`, { method: head ? "HEAD" : "GET", headers }), head, params: { file: req.key.slice(4) }, upstream: true });

    const whole = await get({ "accept-encoding": "identity" });
    expect(whole.headers.get("content-encoding")).toBeNull();
    expect(new Uint8Array(await whole.arrayBuffer())).toEqual(new Uint8Array(path.nar));
    expect(lookups).toBe(0);
    const head = await get({ "accept-encoding": "identity" }, true);
    expect(head.headers.get("content-length")).toBe(String(path.nar.length));
    expect(lookups).toBe(1);
    const ranged = await get({ "accept-encoding": "identity", range: "bytes=-10" });
    expect(new Uint8Array(await ranged.arrayBuffer())).toEqual(new Uint8Array(path.nar.subarray(-10)));
    expect(lookups).toBe(2);
  });

  for (const what of ["deleteNar", "deleteNarInfo"] as const) {
    test(`${what} while the NAR downloads: the download finishes for its readers but is not stored`, async () => {
      const { cache, uploads, synthetic, upstream, db, store, tempDir } = await fixture();
      const path = await synthetic.add(`delete-${what}`, { size: 256 * 1024 });
      const req = await narRequest(cache, path);
      const release = gate();
      upstream.fault(narPath(path), { kind: "hold", afterBytes: 1024, until: release.opened });

      const reading = await readerUnderWay((await cache.nar(req, { startDownload: true }))!);
      expect(what === "deleteNar" ? await uploads.deleteNar(req.key) : await uploads.deleteNarInfo(path.hash)).toBe(true);
      release.open();
      expect(await reading.rest).toEqual(path.file);
      await cache.drain();

      expect(await db.getNar(req.key)).toBeNull();
      expect(await store.stat(req.key)).toBeNull();
      expect(await db.getNarInfo(path.hash)).toBeNull();
      expect(await readdir(tempDir)).toEqual([]);
    });
  }
});
