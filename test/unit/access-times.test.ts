/** AccessTimes keeps hits in memory and writes them in one batch: recording never writes,
 * a flush writes each distinct hash once, in one call. A real SQLite store underneath. */
import { afterEach, beforeEach, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AccessTimes } from "../../src/cache/access-times.ts";
import type { MetadataStore, NarInfoRecord } from "../../src/db/metadata-store.ts";
import { openMetadataStore } from "../../src/db/open.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";

const CREATED = 1000;
const [a, b, c, untouched] = ["1", "2", "3", "4"].map((ch) => ch.repeat(32)) as [string, string, string, string];

function record(hash: string): NarInfoRecord {
  const narKey = `nar/${hash}${"0".repeat(20)}.nar`;
  return {
    hash,
    storePath: `/nix/store/${hash}-x`,
    text: `StorePath: /nix/store/${hash}-x\nURL: ${narKey}\n`,
    narKey,
    upstream: null,
    upstreamNarUrl: null,
    compression: "none",
    fileHash: null,
    fileSize: null,
    narHash: `sha256:${"0".repeat(52)}`,
    narSize: 1,
    references: [],
    createdAt: CREATED,
  };
}

let work: string;
let store: MetadataStore;
let touchCalls: string[][];
/** The real store, with its touch calls counted. */
let counted: MetadataStore;
let times: AccessTimes | null;

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-access-times-"));
  store = await openMetadataStore(`sqlite:${join(work, "db.sqlite")}`);
  for (const hash of [a, b, c, untouched]) await store.putNarInfo(record(hash));
  touchCalls = [];
  counted = new Proxy(store, {
    get(target, prop) {
      if (prop === "touch") {
        return (hashes: string[], at: number) => {
          touchCalls.push([...hashes]);
          return target.touch(hashes, at);
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  times = null;
});

afterEach(async () => {
  await times?.close();
  await store.close();
  await rm(work, { recursive: true, force: true });
});

/** last_accessed_at of each hash, read from the file itself rather than through ncps. */
function lastAccessed(...hashes: string[]): number[] {
  const db = new Database(join(work, "db.sqlite"), { readonly: true });
  try {
    const q = db.query("SELECT last_accessed_at AS t FROM narinfos WHERE hash = ?");
    return hashes.map((h) => (q.get(h) as { t: number }).t);
  } finally {
    db.close();
  }
}

test("many hits on a few hashes: nothing written until flush, then each hash touched once", async () => {
  times = new AccessTimes(counted, silentLogger, 3_600_000); // the timer never fires in this test
  for (let i = 0; i < 100; i++) for (const hash of [a, b, a, c, a]) times.record(hash);
  expect(touchCalls).toEqual([]);
  expect(lastAccessed(a, b, c, untouched)).toEqual([CREATED, CREATED, CREATED, CREATED]);

  const before = Date.now();
  await times.flush();
  // one write per 100 ms the hits fell in: one here, two if they straddled a slice
  expect(touchCalls.length).toBeLessThanOrEqual(2);
  expect(touchCalls.flat().toSorted()).toEqual([a, b, c]);
  const [ta, tb, tc, tu] = lastAccessed(a, b, c, untouched);
  for (const t of [ta, tb, tc]) expect(t).toBeGreaterThanOrEqual(before - 2000);
  expect(tu).toBe(CREATED);

  const writes = touchCalls.length;
  await times.flush(); // nothing new: no write
  expect(touchCalls.length).toBe(writes);
});

test("a hit is written as when it happened, not when the batch goes out", async () => {
  times = new AccessTimes(counted, silentLogger, 3_600_000);
  const servedAt = Date.now();
  times.record(a);
  await Bun.sleep(1100); // a narinfo recorded after that hit, before the flush
  const later = Date.now();
  await store.putNarInfo({ ...record(untouched.replace(/4/g, "5")), createdAt: later });
  await times.flush();
  const [ta] = lastAccessed(a);
  expect(ta).toBeLessThanOrEqual(servedAt);
  expect(ta).toBeGreaterThan(servedAt - 100);
  expect(ta).toBeLessThan(later); // so an LRU pass takes a before the newer narinfo
});

test("a hit 0.2 s after a narinfo was stored is written as later than that", async () => {
  times = new AccessTimes(counted, silentLogger, 3_600_000);
  const stored = { ...record(untouched.replace(/4/g, "6")), createdAt: Date.now() };
  await store.putNarInfo(stored);
  await Bun.sleep(200);
  times.record(a);
  await times.flush();
  expect(lastAccessed(a)[0]).toBeGreaterThan(stored.createdAt); // else a pass would evict a first
});

test("hits after a flush go in the next batch; close flushes what is left", async () => {
  times = new AccessTimes(counted, silentLogger, 3_600_000);
  times.record(a);
  await times.flush();
  times.record(b);
  times.record(b);
  await times.close();
  times = null;
  expect(touchCalls).toEqual([[a], [b]]);
  expect(lastAccessed(c, untouched)).toEqual([CREATED, CREATED]);
});

test("the interval timer flushes without being asked", async () => {
  times = new AccessTimes(counted, silentLogger, 20);
  times.record(c);
  times.record(c);
  for (let i = 0; i < 200 && touchCalls.length === 0; i++) await Bun.sleep(10);
  expect(touchCalls).toEqual([[c]]);
  expect(lastAccessed(c)[0]).toBeGreaterThan(CREATED);
});
