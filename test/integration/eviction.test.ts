/** LRU eviction under --cache-max-size, in a whole ncps (startInProcess) on local and S3
 * storage in front of a synthetic upstream: the cap holds after commits, the least recently
 * used go first, a shared NAR goes with its last narinfo, pinned closures and downloads in
 * flight stay, a client streaming an evicted NAR gets every byte, and passes never overlap.
 * The test reads and sets access times and pins through a second database connection. */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import { Eviction, type PassResult } from "../../src/cache/eviction.ts";
import { HotNarInfos } from "../../src/cache/hot-narinfos.ts";
import { StoredNars } from "../../src/cache/stored-nars.ts";
import type { MetadataStore } from "../../src/db/metadata-store.ts";
import { openMetadataStore } from "../../src/db/open.ts";
import { MemoryLocker } from "../../src/lock/memory.ts";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { LocalBlobStore } from "../../src/storage/local.ts";
import { silentLogger, type Logger } from "../../src/telemetry/logger.ts";
import { eventually } from "../helpers/eventually.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { testIf } from "../helpers/prereq.ts";
import { s3rverAvailable, startS3rver, type S3rver } from "../helpers/s3rver.ts";
import { makeSyntheticCache, type SyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const T = 60_000;
const KiB = 1024;
const MiB = 1024 * KiB;

let work: string;
let syn: SyntheticCache;
let up: Upstream;
let s3: S3rver | null = null;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-eviction-"));
  syn = await makeSyntheticCache(join(work, "upstream"));
  up = await startUpstream(syn.dir);
  if (s3rverAvailable) s3 = await startS3rver();
});

afterAll(async () => {
  await up?.stop();
  await s3?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** Cleanups of the running test, last first. */
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => {});
});

interface Fixture {
  ncps: RunningNcps;
  eviction: Eviction;
  /** a second connection to ncps's database */
  db: MetadataStore;
  /** bytes in storage now (local: files under nar/; S3: objects under the prefix) */
  storedOnDisk(): Promise<number>;
  /** every pass ncps logged */
  passes: Record<string, unknown>[];
}

type Storage = "local" | "s3";
let instances = 0;

/** An ncps capped at `maxSize` on `storage`, in front of the synthetic upstream. */
async function capped(storage: Storage, maxSize: number, extra: Record<string, unknown> = {}): Promise<Fixture> {
  const dataDir = join(work, `ncps-${++instances}`);
  const prefix = `evict-${instances}`;
  const storageArgs =
    storage === "local"
      ? {}
      : {
          "cache-storage-local": undefined,
          "cache-storage-s3-bucket": s3!.bucket,
          "cache-storage-s3-endpoint": s3!.endpoint,
          "cache-storage-s3-access-key-id": s3!.accessKeyId,
          "cache-storage-s3-secret-access-key": s3!.secretAccessKey,
          "cache-storage-s3-force-path-style": true,
          "cache-storage-s3-prefix": prefix,
        };
  const databaseUrl = `sqlite:${join(dataDir, "db", "db.sqlite")}`;
  const passes: Record<string, unknown>[] = [];
  const logger: Logger = {
    ...silentLogger,
    info: (message, fields) => void (message === "LRU eviction pass" && passes.push(fields ?? {})),
    warn: (message, fields) => void (message.startsWith("LRU eviction pass") && passes.push(fields ?? {})),
    error: (message, fields) => console.error(message, fields),
  };
  const ncps = await startInProcess(
    dataDir,
    {
      "cache-database-url": databaseUrl,
      "cache-upstream-url": [up.url],
      "cache-upstream-public-key": [syn.publicKey],
      "cache-max-size": String(maxSize),
      ...storageArgs,
      ...extra,
    },
    logger,
  );
  cleanups.push(() => ncps.stop());
  const db = await openMetadataStore(databaseUrl, { migrate: false });
  cleanups.push(() => db.close());
  const storedOnDisk = async () => {
    if (storage === "local") {
      const files = (await readdir(join(dataDir, "nar"))).filter((f) => !f.startsWith("."));
      let total = 0;
      for (const f of files) total += (await stat(join(dataDir, "nar", f))).size;
      return total;
    }
    const dir = join(s3!.dir, s3!.bucket, prefix, "nar");
    const files = await readdir(dir).catch(() => [] as string[]);
    let total = 0;
    for (const f of files.filter((f) => f.endsWith("._S3rver_object"))) total += (await stat(join(dir, f))).size;
    return total;
  };
  return { ncps, eviction: ncps.eviction!, db, storedOnDisk, passes };
}

/** The narinfo ncps serves for `path` (fetched from the upstream on a miss). */
async function narInfoUrl(ncps: RunningNcps, path: SyntheticPath): Promise<string> {
  const res = await fetch(`${ncps.url}/${path.hash}.narinfo`);
  expect(res.status).toBe(200);
  return `${ncps.url}/${parseNarInfo(await res.text()).url}`;
}

/** A path fetched through ncps as Nix does (narinfo, then NAR), its NAR recorded and every
 * pass its commit started finished. */
async function fetchPath(f: Fixture, path: SyntheticPath): Promise<void> {
  await fetchNar(f, path, await narInfoUrl(f.ncps, path));
}

/** The NAR at `narUrl` read whole, then recorded, then the pass its commit started over. */
async function fetchNar(f: Fixture, path: SyntheticPath, narUrl: string): Promise<void> {
  const res = await fetch(narUrl);
  expect(res.status).toBe(200);
  expect<Uint8Array>(new Uint8Array(await res.arrayBuffer())).toEqual(path.file);
  // the client has every byte just before the NAR is recorded
  const key = new URL(narUrl).pathname.slice(1);
  await eventually(`${key} recorded`, async () => (await f.db.getNar(key)) !== null || !f.ncps.cache.isDownloading(key), { everyMs: 5 });
  await f.eviction.trigger("manual"); // the pass the commit started, or none if under the cap
}

/** `path` fetched as fetchPath does, its narinfo recorded first and then the access times set
 * in `order` (which should name it), so that the pass its NAR's commit starts sees that order. */
async function fetchInOrder(f: Fixture, path: SyntheticPath, order: SyntheticPath[]): Promise<void> {
  const narUrl = await narInfoUrl(f.ncps, path);
  await setLruOrder(f.db, order);
  await fetchNar(f, path, narUrl);
}

/** Access times in the given order, oldest first, later than any the test's requests set. */
async function setLruOrder(db: MetadataStore, paths: SyntheticPath[]): Promise<void> {
  const base = Date.now() + 1e9;
  for (const [i, p] of paths.entries()) await db.touch([p.hash], base + i * 1000);
}

async function held(db: MetadataStore, paths: SyntheticPath[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of paths) if ((await db.getNarInfoText(p.hash)) !== null) out.push(p.hash);
  return out;
}

function describeOn(storage: Storage) {
  const available = storage === "local" || s3rverAvailable;
  const it = testIf(available, "s3rver is not installed");

  describe(`eviction on ${storage} storage`, () => {
    it("commits past the cap start a pass at once: stored bytes and storage stay under the cap", async () => {
      const f = await capped(storage, 1 * MiB);
      const paths = await Promise.all(Array.from({ length: 8 }, (_, i) => syn.add(`cap-${storage}-${i}`, { size: 256 * KiB })));
      for (const p of paths) {
        await fetchPath(f, p);
        expect(await f.db.storedBytes()).toBeLessThanOrEqual(1 * MiB);
      }
      await f.eviction.flushPendingDeletions();
      expect(await f.storedOnDisk()).toBeLessThanOrEqual(1 * MiB);
      expect(await f.storedOnDisk()).toBe(await f.db.storedBytes());
      expect(f.passes.length).toBeGreaterThan(0);
      for (const pass of f.passes) {
        expect(pass).toMatchObject({ reason: expect.any(String), freedBytes: expect.any(Number), narInfos: expect.any(Number), nars: expect.any(Number), durationMs: expect.any(Number) });
        // down to the low-water mark (90% of the cap), not just under it
        expect(pass.after as number).toBeLessThanOrEqual(0.9 * MiB);
      }
      // the running figure is exact
      expect(await f.db.recountStoredBytes()).toEqual({ before: await f.db.storedBytes(), after: await f.db.storedBytes() });
    }, T);

    it("the least recently used go first; an evicted path is fetched again when asked", async () => {
      const f = await capped(storage, 1000 * KiB);
      const [a, b, c, d] = await Promise.all(["a", "b", "c", "d"].map((n) => syn.add(`lru-${storage}-${n}`, { size: 256 * KiB })));
      for (const p of [a!, b!, c!]) await fetchPath(f, p);
      // d's commit passes the cap (4 x 256K > 1000K): down to 900K, so one NAR goes: b's
      await fetchInOrder(f, d!, [b!, d!, a!, c!]);
      expect(await held(f.db, [a!, b!, c!, d!])).toEqual([a!.hash, c!.hash, d!.hash]);
      // asked again, b comes back from the upstream (and the next least recent goes)
      const hitsBefore = up.hits(`/${b!.narinfo.url}`);
      await fetchInOrder(f, b!, [a!, c!, d!, b!]);
      expect(up.hits(`/${b!.narinfo.url}`)).toBe(hitsBefore + 1);
      expect(await held(f.db, [a!, b!, c!, d!])).toEqual([b!.hash, c!.hash, d!.hash]);
    }, T);

    it("a narinfo served just before a pass counts as used, though its access time is only in memory", async () => {
      const f = await capped(storage, 1000 * KiB);
      const [a, b, c, d] = await Promise.all(["a", "b", "c", "d"].map((n) => syn.add(`recent-${storage}-${n}`, { size: 256 * KiB })));
      for (const p of [a!, b!, c!]) await fetchPath(f, p);
      await Bun.sleep(1_100); // a's hit clearly after b's and c's were stored
      await narInfoUrl(f.ncps, a!); // a client is handed a's narinfo: its NAR must stay
      await fetchPath(f, d!); // 4 x 256K > 1000K: one NAR goes, b's (a's time is not written yet)
      expect(await held(f.db, [a!, b!, c!, d!])).toEqual([a!.hash, c!.hash, d!.hash]);
    }, T);

    it("a NAR shared by two narinfos goes with the last of them", async () => {
      const f = await capped(storage, 700 * KiB);
      const first = await syn.add(`shared-${storage}-1`, { size: 256 * KiB });
      const second = await syn.add(`shared-${storage}-2`, {
        fileBytes: first.file, // the same file at the same URL
        edit: (n) => ({ ...n, url: first.narinfo.url, fileHash: first.narinfo.fileHash, fileSize: first.narinfo.fileSize, narHash: first.narinfo.narHash, narSize: first.narinfo.narSize }),
      });
      const other = await syn.add(`shared-${storage}-other`, { size: 256 * KiB });
      const newest = await syn.add(`shared-${storage}-newest`, { size: 256 * KiB });
      await fetchPath(f, first);
      await narInfoUrl(f.ncps, second); // names the NAR first already stored
      await fetchPath(f, other);
      // first is the oldest, then second: evicting first frees nothing (second still names
      // the NAR), so second goes too, with the NAR (768K > 700K: down to 630K)
      await fetchInOrder(f, newest, [first, second, other, newest]);
      expect(await held(f.db, [first, second, other, newest])).toEqual([other.hash, newest.hash]);
      const pass = f.passes.at(-1)!;
      expect(pass).toMatchObject({ narInfos: 2, nars: 1, freedBytes: first.file.length });
    }, T);

    it("a pinned closure survives a pass that evicts everything else", async () => {
      const f = await capped(storage, 800 * KiB);
      const dep = await syn.add(`pin-${storage}-dep`, { size: 128 * KiB });
      const root = await syn.add(`pin-${storage}-root`, { size: 128 * KiB, references: [dep.storePath.slice("/nix/store/".length)] });
      const others = await Promise.all([1, 2, 3].map((i) => syn.add(`pin-${storage}-other-${i}`, { size: 128 * KiB })));
      for (const p of [dep, root, ...others]) await fetchPath(f, p);
      expect(await f.db.addPin({ hash: root.hash, storePath: root.storePath, createdAt: Date.now() })).toBe(true);
      const last = await syn.add(`pin-${storage}-last`, { size: 448 * KiB });
      // the pinned closure is the oldest; 5 x 128K + 448K = 1088K > 800K: down to 720K, which
      // only the closure (256K) and last can make
      await fetchInOrder(f, last, [dep, root, ...others, last]);
      expect(await held(f.db, [dep, root, ...others, last])).toEqual([dep.hash, root.hash, last.hash]);
      expect(f.passes.at(-1)).toMatchObject({ skippedPinned: 2 });
    }, T);

    it("a NAR being downloaded is never evicted, and its client gets every byte", async () => {
      const f = await capped(storage, 700 * KiB);
      const slow = await syn.add(`inflight-${storage}`, { size: 256 * KiB });
      const [a, b, c] = await Promise.all(["a", "b", "c"].map((n) => syn.add(`inflight-${storage}-${n}`, { size: 256 * KiB })));
      await fetchPath(f, a!);
      await fetchPath(f, b!);
      const slowUrl = await narInfoUrl(f.ncps, slow);
      let release!: () => void;
      up.fault(`/${slow.narinfo.url}`, { kind: "hold", afterBytes: 1024, until: new Promise<void>((r) => (release = r)) });
      cleanups.push(async () => {
        release();
        up.fault(`/${slow.narinfo.url}`, null);
      });
      const res = await fetch(slowUrl);
      const reader = res.body!.getReader();
      const firstChunk = await reader.read(); // the download is under way
      expect(firstChunk.done).toBe(false);
      // the download's narinfo is the oldest; 768K > 700K: a pass runs while slow downloads
      await fetchInOrder(f, c!, [slow, a!, b!, c!]);
      expect(f.passes.at(-1)).toMatchObject({ skippedDownloading: 1, narInfos: 1 });
      expect(await held(f.db, [slow, a!])).toEqual([slow.hash]);
      release();
      const parts = [firstChunk.value!];
      for (;;) {
        const next = await reader.read();
        if (next.done) break;
        parts.push(next.value);
      }
      expect<Uint8Array>(new Uint8Array(Buffer.concat(parts))).toEqual(slow.file);
    }, T);

    it("a client streaming a NAR while it is evicted gets every byte", async () => {
      // large enough that most of it is still to send when the bytes are deleted
      const f = await capped(storage, 40 * MiB);
      const big = await syn.add(`stream-${storage}-big`, { size: 32 * MiB });
      await fetchPath(f, big);
      const res = await fetch(await narInfoUrl(f.ncps, big));
      const reader = res.body!.getReader();
      const parts: Uint8Array[] = [];
      const first = await reader.read();
      parts.push(first.value!);
      // two more paths pass the cap; big, least recently used, is evicted
      const [x, y] = await Promise.all(["x", "y"].map((n) => syn.add(`stream-${storage}-${n}`, { size: 5 * MiB })));
      await fetchPath(f, x!);
      await fetchInOrder(f, y!, [big, x!, y!]);
      expect(await f.db.getNarInfoText(big.hash)).toBeNull();
      // the bytes outlive the records by a grace, then go while the client still reads
      expect(f.eviction.pendingDeletions).toBe(1);
      await f.eviction.flushPendingDeletions();
      expect(await f.storedOnDisk()).toBe(10 * MiB);
      for (;;) {
        const next = await reader.read();
        if (next.done) break;
        parts.push(next.value);
      }
      const got = new Uint8Array(Buffer.concat(parts));
      expect(got.length).toBe(big.file.length);
      expect<Uint8Array>(got).toEqual(big.file);
    }, T);
  });
}

describeOn("local");
describeOn("s3");

describe("one pass at a time", () => {
  test("two triggers at once make one pass; the after-record hook while a pass runs makes no second", async () => {
    const f = await capped("local", 600 * KiB);
    const paths = await Promise.all([1, 2, 3].map((i) => syn.add(`once-${i}`, { size: 256 * KiB })));
    for (const p of paths.slice(0, 2)) await fetchPath(f, p);
    const passesBefore = f.passes.length;
    // a third path recorded directly: over the cap, and no hook has run for it yet
    await f.db.putNar({ key: "nar/0000000000000000000000000000000000000000000000000000.nar", size: 256 * KiB, fileHash: null, narHash: "sha256:x", createdAt: 1 });
    const [a, b] = await Promise.all([f.eviction.trigger("manual"), f.eviction.trigger("schedule")]);
    expect(a).not.toBeNull();
    expect(b).toBe(a);
    f.eviction.checkCap(); // the pass has ended under the cap: nothing starts
    await f.eviction.trigger("manual");
    expect(f.passes.length).toBe(passesBefore + 1);
  }, T);

  test("two replicas sharing a lock: one of two simultaneous passes runs, the other says another replica has it", async () => {
    const dir = await mkdtemp(join(work, "replicas-"));
    const db = await openMetadataStore(`sqlite:${join(dir, "db.sqlite")}`, { migrate: true });
    cleanups.push(() => db.close());
    const store = new LocalBlobStore(join(dir, "storage"));
    await store.check();
    const locker = new MemoryLocker();
    const replica = () =>
      new Eviction({
        db,
        nars: new StoredNars({ db, store, hot: new HotNarInfos(), logger: silentLogger }),
        isDownloading: () => false,
        maxBytes: 1000,
        locker,
        lockTtlMs: 60_000,
        logger: silentLogger,
      });
    const [one, two] = [replica(), replica()];
    await db.putNar({ key: "nar/1111111111111111111111111111111111111111111111111111.nar", size: 5000, fileHash: null, narHash: "sha256:x", createdAt: 1 });
    const results: (PassResult | null)[] = await Promise.all([one.trigger("schedule"), two.trigger("schedule")]);
    expect(results.filter((r) => r !== null).length).toBe(1);
    await one.close();
    await two.close();
  }, T);
});
