/** The MetadataStore contract, run against each engine: `describeMetadataStore` takes a
 * harness factory, so postgres and mysql plug in with a harness of their own. */
import { Database } from "bun:sqlite";
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MetadataStore, NarInfoRecord, NarRecord, RealisationRecord } from "../../src/db/metadata-store.ts";
import { migrationsFor, type Migration } from "../../src/db/migrations.ts";
import { parseDatabaseUrl, type ServerUrl } from "../../src/db/database-url.ts";
import { MYSQL_QUERIES, MysqlMetadataStore } from "../../src/db/mysql.ts";
import { DatabaseOpenError, openMetadataStore } from "../../src/db/open.ts";
import { POSTGRES_QUERIES, PostgresMetadataStore } from "../../src/db/postgres.ts";
import { SQLITE_QUERIES, SqliteMetadataStore } from "../../src/db/sqlite.ts";
import { createTestDatabase, testServer, withDatabase, type ServerDialect, type TestDatabase } from "../helpers/server-databases.ts";
import { testIf } from "../helpers/prereq.ts";

/** One empty database per test. */
interface MetadataStoreHarness {
  /** a new connection (MetadataStore instance) to this harness's database, not migrated;
   * `migrations` replaces the embedded list (to start from an older schema) */
  connect(migrations?: Migration[]): Promise<MetadataStore>;
  /** run one statement directly (to set up what the interface never writes) */
  exec(sql: string): Promise<void>;
  /** read last-access times directly (the interface has no getter: only eviction reads them) */
  lastAccessedAt(table: "narinfos" | "nars", key: string): Promise<number | null>;
  cleanup(): Promise<void>;
}

const NIX32 = "0123456789abcdfghijklmnpqrsvwxyz";

/** A store path hash part made from a number, so tests can make as many as they need. */
function hashOf(n: number): string {
  let out = "";
  let x = n * 2654435761 + 12345;
  for (let i = 0; i < 32; i++) {
    out += NIX32[x % 32];
    x = Math.floor(x / 32) + (i + 1) * 7919 + n;
  }
  return out;
}

function narInfo(n: number, overrides: Partial<NarInfoRecord> = {}): NarInfoRecord {
  const hash = overrides.hash ?? hashOf(n);
  const references = overrides.references ?? [`${hashOf(n + 1000)}-glibc-2.40`, `${hashOf(n + 2000)}-zlib-1.3`].sort();
  const narKey = overrides.narKey ?? `nar/${hashOf(n + 3000)}${hashOf(n + 4000).slice(0, 20)}.nar.xz`;
  const base: NarInfoRecord = {
    hash,
    storePath: `/nix/store/${hash}-hello-${n}`,
    text: [
      `StorePath: /nix/store/${hash}-hello-${n}`,
      `URL: ${narKey}`,
      "Compression: xz",
      `FileHash: sha256:${hashOf(n + 5000)}0000000000000000000`,
      "FileSize: 12345",
      `NarHash: sha256:${hashOf(n + 6000)}0000000000000000000`,
      "NarSize: 54321",
      `References: ${references.join(" ")}`,
      "Sig: cache.example.org-1:c2lnbmF0dXJl",
      "",
    ].join("\n"),
    narKey,
    upstream: "https://cache.nixos.org",
    upstreamNarUrl: `https://cache.nixos.org/${narKey}?hash=abc`,
    compression: "xz",
    fileHash: `sha256:${hashOf(n + 5000)}0000000000000000000`,
    fileSize: 12345,
    narHash: `sha256:${hashOf(n + 6000)}0000000000000000000`,
    narSize: 54321,
    references,
    createdAt: 1_700_000_000_000 + n,
  };
  return { ...base, ...overrides };
}

/** A realisation of output `output` of derivation n, its output the path of narinfo `outOf`. */
function realisation(n: number, outOf: number, output = "out"): RealisationRecord {
  const id = `sha256:${n.toString(16).padStart(64, "0")}!${output}`;
  const outPath = `${hashOf(outOf)}-hello-${outOf}`;
  return { id, outPath, text: JSON.stringify({ id, outPath }), upstream: null, createdAt: 1_700_000_000_000 + n };
}

function nar(key: string, overrides: Partial<NarRecord> = {}): NarRecord {
  return { key, size: 4_000_000_000, fileHash: "sha256:aaaa", narHash: "sha256:bbbb", createdAt: 1_700_000_000_000, ...overrides };
}

function describeMetadataStore(name: string, makeHarness: () => Promise<MetadataStoreHarness>) {
  describe(`MetadataStore contract: ${name}`, () => {
    let harness: MetadataStoreHarness;
    let store: MetadataStore;
    const opened: MetadataStore[] = [];

    async function connect(): Promise<MetadataStore> {
      const s = await harness.connect();
      opened.push(s);
      return s;
    }

    beforeEach(async () => {
      harness = await makeHarness();
      store = await connect();
      await store.migrate();
    });

    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close();
      await harness.cleanup();
    });

    test("migrate applies every migration once, and status says so", async () => {
      const fresh = await makeHarness();
      const s = await fresh.connect();
      try {
        const names = migrationsFor(s.dialect).map((m) => m.name);
        expect(names.length).toBeGreaterThan(0);
        expect(await s.migrationStatus()).toEqual(names.map((n) => ({ name: n, applied: false })));
        expect(await s.migrate({ dryRun: true })).toEqual(names);
        // a dry run changes nothing
        expect(await s.migrationStatus()).toEqual(names.map((n) => ({ name: n, applied: false })));
        expect(await s.migrate()).toEqual(names);
        expect(await s.migrationStatus()).toEqual(names.map((n) => ({ name: n, applied: true })));
        expect(await s.migrate()).toEqual([]);
        expect(await s.migrate({ dryRun: true })).toEqual([]);
      } finally {
        await s.close();
        await fresh.cleanup();
      }
    });

    test("a second connection sees the migrations as applied", async () => {
      const other = await connect();
      expect(await other.migrate()).toEqual([]);
      expect((await other.migrationStatus()).every((m) => m.applied)).toBe(true);
    });

    test("two connections migrating an empty database at once: applied once, neither fails", async () => {
      const fresh = await makeHarness();
      const [a, b] = [await fresh.connect(), await fresh.connect()];
      try {
        const names = migrationsFor(a.dialect).map((m) => m.name);
        const [byA, byB] = await Promise.all([a.migrate(), b.migrate()]);
        expect([...byA, ...byB].sort()).toEqual(names);
        expect(await a.migrationStatus()).toEqual(names.map((n) => ({ name: n, applied: true })));
        await a.setConfig("k", "v");
        expect(await b.getConfig("k")).toBe("v");
      } finally {
        await a.close();
        await b.close();
        await fresh.cleanup();
      }
    });

    test("narinfo text and record round-trip exactly", async () => {
      const rec = narInfo(1, { text: "StorePath: /nix/store/x-ünïcødé\nURL: nar/x.nar\n\n" });
      expect(await store.getNarInfoText(rec.hash)).toBeNull();
      expect(await store.getNarInfo(rec.hash)).toBeNull();
      await store.putNarInfo(rec);
      expect(await store.getNarInfoText(rec.hash)).toBe(rec.text);
      expect(await store.getNarInfo(rec.hash)).toEqual(rec);
      expect(await store.getNarInfoText(hashOf(2))).toBeNull();
    });

    test("nullable fields (an upload: no upstream, no file hash or size) stay null", async () => {
      const rec = narInfo(3, { upstream: null, upstreamNarUrl: null, fileHash: null, fileSize: null, compression: "none", references: [] });
      await store.putNarInfo(rec);
      expect(await store.getNarInfo(rec.hash)).toEqual(rec);
    });

    test("references come back sorted, duplicates once", async () => {
      const a = `${hashOf(50)}-a`;
      const b = `${hashOf(51)}-b`;
      const c = `${hashOf(52)}-c`;
      const rec = narInfo(4, { references: [c, a, b, a] });
      await store.putNarInfo(rec);
      expect((await store.getNarInfo(rec.hash))!.references).toEqual([a, b, c].sort());
    });

    test("sizes beyond 2^32 survive", async () => {
      const rec = narInfo(5, { fileSize: 5_000_000_000, narSize: 2 ** 52 });
      await store.putNarInfo(rec);
      const got = (await store.getNarInfo(rec.hash))!;
      expect(got.fileSize).toBe(5_000_000_000);
      expect(got.narSize).toBe(2 ** 52);
    });

    test("putNarInfo replaces the record and its references", async () => {
      const first = narInfo(6);
      await store.putNarInfo(first);
      const second = narInfo(6, { text: "replaced\n", references: [`${hashOf(77)}-only`], narKey: "nar/other.nar.zst", compression: "zstd" });
      await store.putNarInfo(second);
      expect(await store.getNarInfoText(first.hash)).toBe("replaced\n");
      expect(await store.getNarInfo(first.hash)).toEqual(second);
    });

    test("insertNarInfoIfAbsent inserts once and leaves an existing record unchanged", async () => {
      const first = narInfo(7);
      expect(await store.insertNarInfoIfAbsent(first)).toBe(true);
      const second = narInfo(7, { text: "second\n", references: [] });
      expect(await store.insertNarInfoIfAbsent(second)).toBe(false);
      expect(await store.getNarInfo(first.hash)).toEqual(first);
    });

    test("deleteNarInfo removes the record and its references", async () => {
      const rec = narInfo(8);
      await store.putNarInfo(rec);
      expect(await store.deleteNarInfo(rec.hash)).toBe(true);
      expect(await store.deleteNarInfo(rec.hash)).toBe(false);
      expect(await store.getNarInfoText(rec.hash)).toBeNull();
      expect(await store.getNarInfo(rec.hash)).toBeNull();
      // no stale references resurface when the hash comes back
      const again = narInfo(8, { references: [] });
      expect(await store.insertNarInfoIfAbsent(again)).toBe(true);
      expect((await store.getNarInfo(rec.hash))!.references).toEqual([]);
    });

    // ---- issue 16: realisations ----

    test("realisations: insert once, read back exactly, no narinfo needed", async () => {
      const r = realisation(1, 1);
      expect(await store.getRealisation(r.id)).toBeNull();
      expect(await store.insertRealisationIfAbsent(r)).toBe(true);
      expect(await store.insertRealisationIfAbsent({ ...r, text: "other", upstream: "https://up.example" })).toBe(false);
      expect(await store.getRealisation(r.id)).toEqual(r);
      const traced: RealisationRecord = { ...realisation(2, 1), id: `${hashOf(9)}-x.drv^dev`, upstream: "https://up.example" };
      expect(await store.insertRealisationIfAbsent(traced)).toBe(true);
      expect(await store.getRealisation(traced.id)).toEqual(traced);
      expect(await store.getRealisation(r.id.toUpperCase())).toBeNull(); // ids compare byte for byte
    });

    test("removing a narinfo removes the realisations whose output it is, and only those", async () => {
      const [a, b] = [narInfo(30), narInfo(31)];
      for (const rec of [a, b]) await store.putNarInfo(rec);
      const ofA = [realisation(10, 30), realisation(11, 30, "dev")];
      const ofB = realisation(12, 31);
      const ofC = realisation(13, 32); // its output has no narinfo here
      for (const r of [...ofA, ofB, ofC]) await store.insertRealisationIfAbsent(r);
      expect(await store.deleteNarInfo(a.hash)).toBe(true);
      for (const r of ofA) expect(await store.getRealisation(r.id)).toBeNull();
      expect(await store.getRealisation(ofB.id)).toEqual(ofB);
      // eviction's batch, with a hash that has a realisation but no narinfo
      expect(await store.deleteNarInfos([b.hash, hashOf(32)])).toBe(1);
      expect(await store.getRealisation(ofB.id)).toBeNull();
      expect(await store.getRealisation(ofC.id)).toBeNull();
    });

    test("two connections: insertRealisationIfAbsent races have exactly one winner", async () => {
      const other = await connect();
      for (let n = 200; n < 210; n++) {
        const r = realisation(n, n);
        const [a, b] = await Promise.all([
          store.insertRealisationIfAbsent({ ...r, text: "A" }),
          other.insertRealisationIfAbsent({ ...r, text: "B" }),
        ]);
        expect([a, b].filter(Boolean).length).toBe(1);
        expect((await store.getRealisation(r.id))!.text).toBe(a ? "A" : "B");
      }
    });

    test("narInfosForNar finds every narinfo naming a NAR, and only those", async () => {
      const shared = "nar/1111111111111111111111111111111111111111111111111111.nar.xz";
      const a = narInfo(10, { narKey: shared });
      const b = narInfo(11, { narKey: shared });
      const other = narInfo(12);
      for (const r of [a, b, other]) await store.putNarInfo(r);
      const found = await store.narInfosForNar(shared);
      expect(found.sort((x, y) => (x.hash < y.hash ? -1 : 1))).toEqual([a, b].sort((x, y) => (x.hash < y.hash ? -1 : 1)));
      expect(await store.narInfosForNar("nar/none.nar")).toEqual([]);
    });

    test("NAR records: put, get, replace, delete", async () => {
      const key = "nar/2222.nar.zst";
      expect(await store.getNar(key)).toBeNull();
      const rec = nar(key, { fileHash: null });
      await store.putNar(rec);
      expect(await store.getNar(key)).toEqual(rec);
      const replaced = nar(key, { size: 7, fileHash: "sha256:cccc" });
      await store.putNar(replaced);
      expect(await store.getNar(key)).toEqual(replaced);
      expect(await store.deleteNar(key)).toBe(true);
      expect(await store.deleteNar(key)).toBe(false);
      expect(await store.getNar(key)).toBeNull();
    });

    test("touch updates access times of the narinfos and their NARs, in one batch, never backwards", async () => {
      const a = narInfo(20, { createdAt: 1000 });
      const b = narInfo(21, { createdAt: 1000 });
      const untouched = narInfo(22, { createdAt: 1000 });
      for (const r of [a, b, untouched]) await store.putNarInfo(r);
      await store.putNar(nar(a.narKey, { createdAt: 1000 }));
      await store.putNar(nar(untouched.narKey, { createdAt: 1000 }));
      expect(await harness.lastAccessedAt("narinfos", a.hash)).toBe(1000);

      await store.touch([a.hash, b.hash, hashOf(999)], 5000);
      expect(await harness.lastAccessedAt("narinfos", a.hash)).toBe(5000);
      expect(await harness.lastAccessedAt("narinfos", b.hash)).toBe(5000);
      expect(await harness.lastAccessedAt("nars", a.narKey)).toBe(5000);
      expect(await harness.lastAccessedAt("narinfos", untouched.hash)).toBe(1000);
      expect(await harness.lastAccessedAt("nars", untouched.narKey)).toBe(1000);

      // a late batch with an older time does not move it back
      await store.touch([a.hash], 3000);
      expect(await harness.lastAccessedAt("narinfos", a.hash)).toBe(5000);
      await store.touch([], 9000);
      expect(await harness.lastAccessedAt("narinfos", a.hash)).toBe(5000);
      // touching does not change what is served
      expect(await store.getNarInfo(a.hash)).toEqual(a);
    });

    test("replacing a narinfo keeps its later access time", async () => {
      const rec = narInfo(23, { createdAt: 1000 });
      await store.putNarInfo(rec);
      await store.touch([rec.hash], 8000);
      await store.putNarInfo({ ...rec, text: "new\n", createdAt: 2000 });
      expect(await harness.lastAccessedAt("narinfos", rec.hash)).toBe(8000);
    });

    test("config: get, set, setIfAbsent (first writer wins)", async () => {
      expect(await store.getConfig("k")).toBeNull();
      expect(await store.setConfigIfAbsent("k", "first")).toBe("first");
      expect(await store.setConfigIfAbsent("k", "second")).toBe("first");
      expect(await store.getConfig("k")).toBe("first");
      await store.setConfig("k", "third");
      expect(await store.getConfig("k")).toBe("third");
      await store.setConfig("other", "");
      expect(await store.getConfig("other")).toBe("");
    });

    test("two connections: writes of one are read by the other", async () => {
      const other = await connect();
      const rec = narInfo(30);
      await store.putNarInfo(rec);
      expect(await other.getNarInfoText(rec.hash)).toBe(rec.text);
      await other.deleteNarInfo(rec.hash);
      expect(await store.getNarInfoText(rec.hash)).toBeNull();
    });

    test("two connections: concurrent upserts of the same path end with one writer's whole record", async () => {
      const other = await connect();
      const hash = hashOf(40);
      const fromA = (i: number) => narInfo(40, { text: `A ${i}\n`, references: [`${hashOf(41)}-a-${i}`] });
      const fromB = (i: number) => narInfo(40, { text: `B ${i}\n`, references: [`${hashOf(42)}-b-${i}`, `${hashOf(43)}-b-${i}`] });
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 50; i++) writes.push(store.putNarInfo(fromA(i)), other.putNarInfo(fromB(i)));
      await Promise.all(writes);
      const seenByA = await store.getNarInfo(hash);
      const seenByB = await other.getNarInfo(hash);
      expect(seenByA).toEqual(seenByB!);
      const m = /^([AB]) (\d+)\n$/.exec(seenByA!.text)!;
      expect(m).not.toBeNull();
      const expected = m[1] === "A" ? fromA(Number(m[2])) : fromB(Number(m[2]));
      expect(seenByA).toEqual({ ...expected, references: [...expected.references].sort() });
    });

    test("two connections: insertNarInfoIfAbsent races have exactly one winner", async () => {
      const other = await connect();
      for (let n = 100; n < 120; n++) {
        const [a, b] = await Promise.all([
          store.insertNarInfoIfAbsent(narInfo(n, { text: "A\n" })),
          other.insertNarInfoIfAbsent(narInfo(n, { text: "B\n" })),
        ]);
        expect([a, b].filter(Boolean).length).toBe(1);
        expect(await store.getNarInfoText(hashOf(n))).toBe(a ? "A\n" : "B\n");
      }
    });

    test("two connections: setConfigIfAbsent agrees on one value", async () => {
      const other = await connect();
      const [a, b] = await Promise.all([store.setConfigIfAbsent("key", "from-a"), other.setConfigIfAbsent("key", "from-b")]);
      expect(a).toBe(b);
      expect(await store.getConfig("key")).toBe(a);
    });

    // ---- issue 12: stored bytes, LRU order, references, listings, pins ----

    test("migration 0002 starts the stored-bytes figure at the sum of the NARs already recorded", async () => {
      const fresh = await makeHarness();
      const [first] = migrationsFor(store.dialect);
      const old = await fresh.connect([first!]);
      try {
        await old.migrate();
        // written by the schema-1 ncps: no stats table to keep
        await fresh.exec(
          `INSERT INTO nars (${store.dialect === "mysql" ? "`key`" : "key"}, size, file_hash, nar_hash, created_at, last_accessed_at)
           VALUES ('nar/a.nar', 1000, NULL, 'sha256:x', 1, 1), ('nar/b.nar', 2500000000, NULL, 'sha256:y', 1, 1)`,
        );
        const current = await fresh.connect();
        try {
          expect(await current.migrate()).toEqual(migrationsFor(store.dialect).slice(1).map((m) => m.name));
          expect(await current.storedBytes()).toBe(2_500_001_000);
        } finally {
          await current.close();
        }
      } finally {
        await old.close();
        await fresh.cleanup();
      }
    });

    test("storedBytes follows puts, replacements and deletes of NAR records", async () => {
      expect(await store.storedBytes()).toBe(0);
      await store.putNar(nar("nar/a.nar", { size: 100 }));
      await store.putNar(nar("nar/b.nar", { size: 5_000_000_000 }));
      expect(await store.storedBytes()).toBe(5_000_000_100);
      await store.putNar(nar("nar/a.nar", { size: 40 })); // replaced: the difference
      expect(await store.storedBytes()).toBe(5_000_000_040);
      await store.putNar(nar("nar/a.nar", { size: 40 })); // same size: unchanged
      expect(await store.storedBytes()).toBe(5_000_000_040);
      expect(await store.deleteNar("nar/b.nar")).toBe(true);
      expect(await store.deleteNar("nar/b.nar")).toBe(false); // nothing to take away twice
      expect(await store.storedBytes()).toBe(40);
      expect(await store.recountStoredBytes()).toEqual({ before: 40, after: 40 });
    });

    test("storedCounts counts narinfos and NAR records as they come and go", async () => {
      expect(await store.storedCounts()).toEqual({ narInfos: 0, nars: 0 });
      for (const i of [40, 41, 42]) await store.putNarInfo(narInfo(i));
      await store.putNar(nar("nar/a.nar", { size: 1 }));
      await store.putNar(nar("nar/b.nar", { size: 2 }));
      await store.putNar(nar("nar/a.nar", { size: 3 })); // replaced, not another
      expect(await store.storedCounts()).toEqual({ narInfos: 3, nars: 2 });
      await store.deleteNar("nar/a.nar");
      expect(await store.storedCounts()).toEqual({ narInfos: 3, nars: 1 });
    });

    test("recountStoredBytes sets the figure to the sum of the records and returns both", async () => {
      await store.putNar(nar("nar/a.nar", { size: 100 }));
      await store.putNar(nar("nar/b.nar", { size: 23 }));
      await harness.exec("UPDATE stats SET value = 999 WHERE name = 'stored_bytes'");
      expect(await store.storedBytes()).toBe(999);
      expect(await store.recountStoredBytes()).toEqual({ before: 999, after: 123 });
      expect(await store.storedBytes()).toBe(123);
    });

    test("two connections: concurrent puts, replacements and deletes keep storedBytes exact", async () => {
      const other = await connect();
      const keys = Array.from({ length: 12 }, (_, i) => `nar/${hashOf(500 + i)}.nar`);
      const ops: Promise<unknown>[] = [];
      // every key is written by both connections, replaced with other sizes and deleted, all
      // at once: the same new key inserted twice, a replacement racing a delete...
      for (let round = 0; round < 6; round++) {
        keys.forEach((key, i) => {
          const [a, b] = round % 2 === 0 ? [store, other] : [other, store];
          ops.push(a.putNar(nar(key, { size: 1000 + i * 7 + round })));
          ops.push(b.putNar(nar(key, { size: 3_000_000_000 + i + round * 11 })));
          if ((i + round) % 3 === 0) ops.push(a.deleteNar(key));
          if ((i + round) % 4 === 0) ops.push(b.deleteNar(key));
        });
      }
      await Promise.all(ops);
      let sum = 0;
      for (const key of keys) sum += (await store.getNar(key))?.size ?? 0;
      expect(await store.storedBytes()).toBe(sum);
      expect(await other.storedBytes()).toBe(sum);
      expect(await store.recountStoredBytes()).toEqual({ before: sum, after: sum });
    });

    test("narInfosByAge: least recently used first, ties by hash, paged by a cursor", async () => {
      const recs = [0, 1, 2, 3, 4, 5, 6].map((i) => narInfo(600 + i, { createdAt: 1000 }));
      const noFileSize = narInfo(607, { createdAt: 20_000, fileSize: null });
      for (const r of recs) await store.putNarInfo(r);
      await store.touch([recs[0]!.hash], 9000);
      await store.touch([recs[1]!.hash, recs[2]!.hash], 5000);
      const expected = [
        ...recs.slice(3).map((r) => ({ hash: r.hash, narKey: r.narKey, lastAccessedAt: 1000, size: 12345 })).sort((x, y) => (x.hash < y.hash ? -1 : 1)),
        ...[recs[1]!, recs[2]!].map((r) => ({ hash: r.hash, narKey: r.narKey, lastAccessedAt: 5000, size: 12345 })).sort((x, y) => (x.hash < y.hash ? -1 : 1)),
        { hash: recs[0]!.hash, narKey: recs[0]!.narKey, lastAccessedAt: 9000, size: 12345 },
      ];
      await store.putNarInfo(noFileSize);
      expected.push({ hash: noFileSize.hash, narKey: noFileSize.narKey, lastAccessedAt: 20_000, size: 54321 }); // NarSize
      expect(await store.narInfosByAge(100)).toEqual(expected);
      // pages of 2 (a page ends inside each group of ties) walk the same order
      const paged: unknown[] = [];
      let after: { lastAccessedAt: number; hash: string } | undefined;
      for (;;) {
        const page = await store.narInfosByAge(2, after);
        if (page.length === 0) break;
        expect(page.length).toBeLessThanOrEqual(2);
        paged.push(...page);
        after = page.at(-1)!;
      }
      expect(paged).toEqual(expected);
    });

    test("eviction's batches: deleteNarInfos, namedNarKeys, deleteNars (the stored-bytes figure follows)", async () => {
      const shared = "nar/shared.nar";
      const recs = [narInfo(650, { narKey: shared }), narInfo(651, { narKey: shared }), narInfo(652), narInfo(653)];
      for (const r of recs) await store.putNarInfo(r);
      for (const key of [shared, recs[2]!.narKey, recs[3]!.narKey]) await store.putNar(nar(key, { size: 10 }));
      expect(await store.deleteNarInfos([recs[0]!.hash, recs[2]!.hash, recs[2]!.hash, hashOf(654)])).toBe(2);
      expect(await store.getNarInfo(recs[0]!.hash)).toBeNull();
      expect(await store.getNarInfo(recs[1]!.hash)).toEqual(recs[1]!);
      expect(await store.namedNarKeys([shared, recs[2]!.narKey, recs[3]!.narKey, "nar/none.nar"])).toEqual(new Set([shared, recs[3]!.narKey]));
      expect(await store.namedNarKeys([])).toEqual(new Set());
      const removed = await store.deleteNars([recs[2]!.narKey, "nar/none.nar", recs[2]!.narKey]);
      expect(removed).toEqual([nar(recs[2]!.narKey, { size: 10 })]);
      expect(await store.storedBytes()).toBe(20);
      expect(await store.deleteNars([])).toEqual([]);
      // more keys than one statement takes
      const many = Array.from({ length: 1500 }, (_, i) => `nar/many-${i}.nar`);
      for (const key of many.slice(0, 3)) await store.putNar(nar(key, { size: 1 }));
      expect((await store.deleteNars(many)).length).toBe(3);
      expect(await store.deleteNarInfos(Array.from({ length: 1500 }, (_, i) => hashOf(3000 + i)))).toBe(0);
      expect(await store.recountStoredBytes()).toEqual({ before: 20, after: 20 });
    });

    test("two connections: deleteNars racing putNar and deleteNar keeps storedBytes exact", async () => {
      const other = await connect();
      const keys = Array.from({ length: 30 }, (_, i) => `nar/race-${i}.nar`);
      for (const key of keys) await store.putNar(nar(key, { size: 100 }));
      const ops: Promise<unknown>[] = [];
      for (let round = 0; round < 4; round++) {
        ops.push(store.deleteNars(keys.filter((_, i) => (i + round) % 2 === 0)));
        keys.forEach((key, i) => {
          if ((i + round) % 3 === 0) ops.push(other.putNar(nar(key, { size: 7 + i })));
          if ((i + round) % 5 === 0) ops.push(other.deleteNar(key));
        });
      }
      await Promise.all(ops);
      let sum = 0;
      for (const key of keys) sum += (await store.getNar(key))?.size ?? 0;
      expect(await store.storedBytes()).toBe(sum);
    });

    test("referencesOf gives each hash its direct references, empty for none or unknown", async () => {
      const a = narInfo(700, { references: [`${hashOf(2)}-b`, `${hashOf(1)}-a`] });
      const b = narInfo(701, { references: [] });
      await store.putNarInfo(a);
      await store.putNarInfo(b);
      const refs = await store.referencesOf([a.hash, b.hash, hashOf(702)]);
      expect(refs).toEqual(
        new Map([
          [a.hash, [`${hashOf(1)}-a`, `${hashOf(2)}-b`].sort()],
          [b.hash, []],
          [hashOf(702), []],
        ]),
      );
      expect(await store.referencesOf([])).toEqual(new Map());
      // more hashes than one statement takes
      const many = Array.from({ length: 2500 }, (_, i) => hashOf(10_000 + i));
      const all = await store.referencesOf([...many, a.hash]);
      expect(all.size).toBe(2501);
      expect(all.get(a.hash)).toEqual(refs.get(a.hash)!);
    });

    test("listNarInfos and listNars page in key order", async () => {
      const recs = [0, 1, 2, 3, 4].map((i) => narInfo(800 + i, { upstream: i === 0 ? null : "https://u" }));
      for (const r of recs) await store.putNarInfo(r);
      const byHash = [...recs].sort((x, y) => (x.hash < y.hash ? -1 : 1));
      const first = await store.listNarInfos(3);
      expect(first).toEqual(byHash.slice(0, 3).map((r) => ({ hash: r.hash, narKey: r.narKey, upstream: r.upstream })));
      const rest = await store.listNarInfos(3, first.at(-1)!.hash);
      expect(rest.map((r) => r.hash)).toEqual(byHash.slice(3).map((r) => r.hash));
      expect(await store.listNarInfos(3, byHash.at(-1)!.hash)).toEqual([]);

      const nars = ["nar/c.nar", "nar/a.nar", "nar/b.nar"].map((k, i) => nar(k, { size: i + 1 }));
      for (const n of nars) await store.putNar(n);
      expect((await store.listNars(2)).map((n) => n.key)).toEqual(["nar/a.nar", "nar/b.nar"]);
      expect(await store.listNars(2, "nar/b.nar")).toEqual([nars[0]!]);
    });

    test("chunks: reserved, stored, a chunked NAR holds them in order, counted once in storedBytes", async () => {
      const c = (n: number) => ({ hash: n.toString(16).padStart(64, "0"), size: 100 * n, narBytes: 1000 * n });
      const before = await store.storedBytes();
      const states = await store.reserveChunks([c(1), c(2), c(1)], 10);
      expect([...states].sort()).toEqual([[c(1).hash, "unstored"], [c(2).hash, "unstored"]]);
      expect(await store.storedBytes()).toBe(before + 300);
      await store.markChunksStored([c(1).hash]);
      expect((await store.reserveChunks([c(1), c(2), c(3)], 20)).get(c(1).hash)).toBe("stored");
      expect(await store.storedBytes()).toBe(before + 600);
      await store.markChunksStored([c(2).hash, c(3).hash]);

      expect(await store.putChunkedNar(nar("a.nar", { size: 12345 }), [c(2).hash, c(1).hash, c(2).hash], 30)).toBe(true);
      expect(await store.getNar("a.nar")).toEqual(nar("a.nar", { size: 0, chunked: true }));
      expect(await store.narChunks("a.nar")).toEqual([c(2), c(1), c(2)]);
      expect(await store.storedBytes()).toBe(before + 600); // the NAR adds nothing: its chunks are counted
      expect((await store.listChunks(10)).map((x) => x.state)).toEqual(["stored", "stored", "stored"]);

      // a whole NAR replacing the chunked record drops its chunk list
      await store.putNar(nar("a.nar", { size: 7 }));
      expect(await store.narChunks("a.nar")).toEqual([]);
      expect(await store.storedBytes()).toBe(before + 607);
      // and a chunked record replacing a whole one takes its size out of the figure
      expect(await store.putChunkedNar(nar("a.nar"), [c(3).hash], 40)).toBe(true);
      expect(await store.storedBytes()).toBe(before + 600);
      expect(await store.recountStoredBytes()).toEqual({ before: before + 600, after: before + 600 });
    });

    test("chunks: only unused chunks past their grace are doomed; a doomed chunk is never recorded into a NAR", async () => {
      const c = (n: number) => ({ hash: n.toString(16).padStart(64, "0"), size: 10, narBytes: 100 });
      await store.reserveChunks([c(1), c(2), c(3)], 100);
      await store.markChunksStored([c(1).hash, c(2).hash, c(3).hash]);
      expect(await store.putChunkedNar(nar("held.nar"), [c(1).hash], 100)).toBe(true);
      const base = await store.storedBytes();
      // used at 100: not unused before 100
      expect(await store.doomUnusedChunks(100, 10, 200)).toEqual([]);
      await store.reserveChunks([c(3)], 150); // c(3) reserved again by a commit: its grace starts over
      expect(await store.doomUnusedChunks(120, 10, 200)).toEqual([c(2)]);
      // a commit cannot rely on a doomed chunk: reserving says so, recording refuses it
      expect((await store.reserveChunks([c(2)], 210)).get(c(2).hash)).toBe("doomed");
      expect(await store.putChunkedNar(nar("late.nar"), [c(3).hash, c(2).hash], 210)).toBe(false);
      expect(await store.getNar("late.nar")).toBeNull();
      // a sweep that stopped half way finds its doomed chunks again
      expect(await store.doomUnusedChunks(120, 10, 300)).toEqual([c(2)]);
      expect(await store.deleteDoomedChunks([c(2).hash, c(1).hash])).toBe(1); // c(1) is not doomed
      expect(await store.storedBytes()).toBe(base - 10);
      expect((await store.listChunks(10)).map((x) => x.hash)).toEqual([c(1).hash, c(3).hash]);
      // deleting the NAR frees its chunks for a later sweep
      await store.deleteNar("held.nar");
      expect(await store.narChunks("held.nar")).toEqual([]);
      expect(await store.doomUnusedChunks(1000, 10, 1000)).toEqual([c(1), c(3)].sort((a, b) => (a.hash < b.hash ? -1 : 1)));
    });

    test("two connections: concurrent commits sharing chunks never double-count one, and a sweep never dooms one a commit holds", async () => {
      const other = await connect();
      const c = (n: number) => ({ hash: n.toString(16).padStart(64, "0"), size: 1000 + n, narBytes: 5000 });
      const shared = Array.from({ length: 50 }, (_, i) => c(i));
      const before = await store.storedBytes();
      const commit = async (db: MetadataStore, key: string, at: number) => {
        for (;;) {
          await db.reserveChunks(shared, at);
          await db.markChunksStored(shared.map((x) => x.hash));
          if (await db.putChunkedNar(nar(key), shared.map((x) => x.hash), at)) return;
        }
      };
      const sweeps = async (db: MetadataStore) => {
        for (let i = 0; i < 5; i++) {
          const doomed = await db.doomUnusedChunks(Number.MAX_SAFE_INTEGER, 100, 1);
          await db.deleteDoomedChunks(doomed.map((x) => x.hash));
        }
      };
      await Promise.all([commit(store, "x.nar", 10), commit(other, "y.nar", 10), sweeps(store), sweeps(other), commit(other, "z.nar", 11)]);
      for (const key of ["x.nar", "y.nar", "z.nar"]) expect(await store.narChunks(key)).toEqual(shared);
      expect(await store.storedBytes()).toBe(before + shared.reduce((n, x) => n + x.size, 0));
      expect(await store.recountStoredBytes()).toEqual({ before: before + shared.reduce((n, x) => n + x.size, 0), after: before + shared.reduce((n, x) => n + x.size, 0) });
    });

    test("pins: add once, list oldest first, remove once", async () => {
      const a = { hash: hashOf(900), storePath: `/nix/store/${hashOf(900)}-a`, createdAt: 2000 };
      const b = { hash: hashOf(901), storePath: `/nix/store/${hashOf(901)}-b`, createdAt: 1000 };
      expect(await store.listPins()).toEqual([]);
      expect(await store.addPin(a)).toBe(true);
      expect(await store.addPin(b)).toBe(true);
      expect(await store.addPin({ ...a, createdAt: 5 })).toBe(false); // left unchanged
      expect(await store.listPins()).toEqual([b, a]);
      expect(await store.removePin(a.hash)).toBe(true);
      expect(await store.removePin(a.hash)).toBe(false);
      expect(await store.listPins()).toEqual([b]);
    });
  });
}

// ---- sqlite -----------------------------------------------------------------------------

async function sqliteHarness(): Promise<MetadataStoreHarness & { path: string }> {
  const dir = await mkdtemp(join(tmpdir(), "ncps-sqlite-"));
  const path = join(dir, "db.sqlite");
  return {
    path,
    connect: async (migrations) => new SqliteMetadataStore(path, migrations),
    exec: async (sql) => {
      const raw = new Database(path);
      try {
        raw.run(sql);
      } finally {
        raw.close();
      }
    },
    lastAccessedAt: async (table, key) => {
      const raw = new Database(path, { readonly: true });
      try {
        const keyColumn = table === "narinfos" ? "hash" : "key";
        const row = raw.prepare(`SELECT last_accessed_at AS at FROM ${table} WHERE ${keyColumn} = ?`).get(key) as { at: number } | null;
        return row ? row.at : null;
      } finally {
        raw.close();
      }
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

describeMetadataStore("sqlite", sqliteHarness);

describe("sqlite specifics", () => {
  let h: Awaited<ReturnType<typeof sqliteHarness>>;
  let store: SqliteMetadataStore;

  beforeEach(async () => {
    h = await sqliteHarness();
    store = new SqliteMetadataStore(h.path);
    await store.migrate();
  });

  afterEach(async () => {
    await store.close();
    await h.cleanup();
  });

  function plan(sql: string): string[] {
    const raw = new Database(h.path, { readonly: true });
    try {
      return (raw.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as { detail: string }[]).map((r) => r.detail);
    } finally {
      raw.close();
    }
  }

  test("getNarInfoText is one primary-key search, no scan", () => {
    expect(plan(SQLITE_QUERIES.narInfoText)).toEqual(["SEARCH narinfos USING INDEX sqlite_autoindex_narinfos_1 (hash=?)"]);
  });

  test("no statement the store runs scans a table", () => {
    // those that read a whole table by design: fsck's recount, the (short) pin list, and
    // the row counts the metrics read at most every 30 s
    const whole = new Set(["sumNarSizes", "listPins", "storedCounts"]);
    for (const [name, sql] of Object.entries(SQLITE_QUERIES)) {
      if (whole.has(name)) continue;
      const details = plan(sql);
      for (const d of details) expect(`${name}: ${d}`).not.toMatch(/: SCAN /);
    }
    expect(plan(SQLITE_QUERIES.narInfosForNar).join()).toContain("narinfos_nar_key");
  });

  test("the LRU order by last access is served by an index", () => {
    expect(plan("SELECT key FROM nars ORDER BY last_accessed_at LIMIT 100").join()).toContain("nars_last_accessed_at");
    expect(plan("SELECT hash FROM narinfos ORDER BY last_accessed_at LIMIT 100").join()).toContain("narinfos_last_accessed_at");
    // eviction's cursor: a range on the index, in its order (no sort of the rest of the table)
    const byAge = plan(SQLITE_QUERIES.narInfosByAge).join();
    expect(byAge).toContain("narinfos_last_accessed_at");
    expect(byAge).not.toContain("TEMP B-TREE");
  });

  test("the file is in WAL mode and foreign keys are enforced (references cascade)", async () => {
    const rec = narInfo(60);
    await store.putNarInfo(rec);
    const raw = new Database(h.path, { readonly: true });
    const count = () => (raw.prepare("SELECT count(*) AS n FROM narinfo_references WHERE hash = ?").get(rec.hash) as { n: number }).n;
    try {
      expect((raw.prepare("PRAGMA journal_mode").get() as { journal_mode: string }).journal_mode).toBe("wal");
      expect(count()).toBe(rec.references.length);
      await store.deleteNarInfo(rec.hash);
      expect(count()).toBe(0);
    } finally {
      raw.close();
    }
  });

  test("two processes writing the same database at once: no busy errors, one winner per insert", async () => {
    const script = join(h.path, "..", "writer.ts");
    const sqliteModule = join(import.meta.dir, "../../src/db/sqlite.ts");
    await writeFile(
      script,
      `import { SqliteMetadataStore } from ${JSON.stringify(sqliteModule)};
import { existsSync } from "node:fs";
const [path, who, go] = process.argv.slice(2);
const store = new SqliteMetadataStore(path);
// start together: wait for the parent's go file
while (!existsSync(go)) await Bun.sleep(1);
const wins = [];
for (let i = 0; i < 300; i++) {
  const hash = String(i).padStart(32, "0");
  const rec = { hash, storePath: "/nix/store/" + hash + "-x", text: who + " " + i + "\\n", narKey: "nar/" + i + ".nar",
    upstream: null, upstreamNarUrl: null, compression: "none", fileHash: null, fileSize: null,
    narHash: "sha256:x", narSize: i, references: [who + "-ref-" + i], createdAt: i };
  if (await store.insertNarInfoIfAbsent(rec)) wins.push(i);
  await store.putNarInfo({ ...rec, hash: "z".repeat(32), text: who + " last " + i + "\\n", references: [who + "-" + i] });
  await store.touch([hash], 1000 + i);
}
await store.close();
console.log(JSON.stringify(wins));
`,
    );
    const go = join(h.path, "..", "go");
    const run = (who: string) =>
      Bun.spawn([process.execPath, script, h.path, who, go], { stdout: "pipe", stderr: "pipe" });
    const procs = [run("P"), run("Q")];
    await Bun.sleep(300); // let both load; correctness does not depend on it, only the overlap
    await writeFile(go, "");
    const results = await Promise.all(
      procs.map(async (p) => {
        const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
        expect(err).toBe("");
        expect(code).toBe(0);
        return JSON.parse(out) as number[];
      }),
    );
    const [p, q] = results as [number[], number[]];
    if (process.env.NCPS_TEST_VERBOSE) console.log(`insert winners: P ${p.length}, Q ${q.length}`);
    // every hash was inserted by exactly one process
    expect([...p, ...q].sort((a, b) => a - b)).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(p.filter((i) => q.includes(i))).toEqual([]);
    for (const i of [0, 150, 299]) {
      const text = await store.getNarInfoText(String(i).padStart(32, "0"));
      expect(text).toBe(`${p.includes(i) ? "P" : "Q"} ${i}\n`);
    }
    // the record both kept replacing is one writer's whole record
    const last = (await store.getNarInfo("z".repeat(32)))!;
    const m = /^([PQ]) last (\d+)\n$/.exec(last.text)!;
    expect(m).not.toBeNull();
    expect(last.references).toEqual([`${m[1]}-${m[2]}`]);
  }, 60_000); // explicit: bun 1.4.4 ignores the bunfig timeout
});

describe("openMetadataStore (sqlite)", () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "ncps-open-"));
  });

  afterEach(async () => {
    await chmod(dir, 0o700).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });

  test("creates the parent directories and migrates by default", async () => {
    const path = join(dir, "a", "b", "db.sqlite");
    const store = await openMetadataStore(`sqlite:${path}`);
    try {
      expect(store.dialect).toBe("sqlite");
      expect((await store.migrationStatus()).every((m) => m.applied)).toBe(true);
      await store.setConfig("x", "y");
      expect(await Bun.file(path).exists()).toBe(true);
    } finally {
      await store.close();
    }
    // and reopens the same file with the same data
    const again = await openMetadataStore(`sqlite:///${path.slice(1)}`);
    try {
      expect(await again.getConfig("x")).toBe("y");
    } finally {
      await again.close();
    }
  });

  test("migrate: false leaves the schema alone and queries say to run ncps migrate", async () => {
    const store = await openMetadataStore(`sqlite:${join(dir, "db.sqlite")}`, { migrate: false });
    try {
      expect((await store.migrationStatus()).some((m) => !m.applied)).toBe(true);
      await expect(store.getNarInfoText(hashOf(1))).rejects.toThrow("run `ncps migrate`");
      await store.migrate();
      expect(await store.getNarInfoText(hashOf(1))).toBeNull();
    } finally {
      await store.close();
    }
  });

  test("a directory that cannot be created gives one clear line", async () => {
    const blocker = join(dir, "file");
    await writeFile(blocker, "not a directory");
    const err = await openMetadataStore(`sqlite:${join(blocker, "sub", "db.sqlite")}`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatabaseOpenError);
    const message = (err as Error).message;
    expect(message).toBe(`cannot create the database directory ${join(blocker, "sub")}: ENOTDIR: not a directory`);
  });

  test("a file that is not a database gives one clear line", async () => {
    const path = join(dir, "junk.sqlite");
    await writeFile(path, "x".repeat(4096));
    const err = await openMetadataStore(`sqlite:${path}`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatabaseOpenError);
    expect((err as Error).message).toStartWith(`cannot open the sqlite database ${path}: `);
    expect((err as Error).message).not.toContain("\n");
  });

  test("a bad URL gives one clear line without the password", async () => {
    for (const url of ["postgres://u:hunter2@localhost:99999/db", "mysql://u:hunter2@/db", "oracle://u:hunter2@h/db"]) {
      const err = await openMetadataStore(url).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DatabaseOpenError);
      expect((err as Error).message).toStartWith("invalid database URL: ");
      expect((err as Error).message).not.toContain("hunter2");
      expect((err as Error).message).not.toContain("\n");
    }
  });
});

// ---- postgres and mysql ---------------------------------------------------------------

function openServerStore(dialect: ServerDialect, url: string, migrations?: Migration[]): Promise<MetadataStore> {
  const target = parseDatabaseUrl(url) as ServerUrl;
  const opts = migrations ? { migrations } : {};
  return dialect === "postgres" ? PostgresMetadataStore.open(target, opts) : MysqlMetadataStore.open(target, opts);
}

/** the placeholder of the first parameter, and the quoted `key` column, per dialect */
const SQL_SPELLING = {
  postgres: { param: "$1", key: "key" },
  mysql: { param: "?", key: "`key`" },
} as const;

function serverHarness(dialect: ServerDialect, serverUrl: string): () => Promise<MetadataStoreHarness> {
  return async () => {
    const db = await createTestDatabase(serverUrl);
    const { param, key } = SQL_SPELLING[dialect];
    return {
      connect: (migrations) => openServerStore(dialect, db.url, migrations),
      exec: async (sql) => {
        await db.query(sql);
      },
      lastAccessedAt: async (table, k) => {
        const column = table === "narinfos" ? "hash" : key;
        const [row] = await db.query<{ at: number | string }>(`SELECT last_accessed_at AS at FROM ${table} WHERE ${column} = ${param}`, [k]);
        return row ? Number(row.at) : null;
      },
      cleanup: () => db.drop(),
    };
  };
}

function describeServerSpecifics(dialect: ServerDialect, serverUrl: string) {
  describe(`${dialect} specifics`, () => {
    let db: TestDatabase;
    let store: MetadataStore;

    beforeEach(async () => {
      db = await createTestDatabase(serverUrl);
      store = await openServerStore(dialect, db.url);
      await store.migrate();
      // a few rows, so the planner has something to choose between
      for (let n = 0; n < 50; n++) await store.putNarInfo(narInfo(200 + n));
      if (dialect === "postgres") await db.query("ANALYZE");
      else await db.query("ANALYZE TABLE narinfos, narinfo_references, nars");
    });

    afterEach(async () => {
      await store.close();
      await db.drop();
    });

    /** The indexes a query uses (with sequential scans discouraged on postgres, so the answer
     * says whether an index can serve it at all, whatever the table size). */
    async function indexesUsed(sql: string, params: unknown[]): Promise<string[]> {
      if (dialect === "postgres") {
        await db.query("SET enable_seqscan = off"); // the helper's one connection keeps it
        return postgresIndexes(db, sql, params);
      }
      const rows = await db.query<{ key: string | null; type: string | null }>(`EXPLAIN ${sql}`, params);
      return rows.map((r) => `${r.type}:${r.key}`);
    }

    test("getNarInfoText is one primary-key lookup", async () => {
      const hash = hashOf(200);
      const used = await indexesUsed(dialect === "postgres" ? POSTGRES_QUERIES.narInfoText : MYSQL_QUERIES.narInfoText, [hash]);
      expect(used).toEqual(dialect === "postgres" ? ["Index Scan:narinfos_pkey"] : ["const:PRIMARY"]);
    });

    test("narinfos for a NAR are found through the nar_key index", async () => {
      const key = narInfo(210).narKey;
      const sql = dialect === "postgres" ? POSTGRES_QUERIES.narInfosForNar : MYSQL_QUERIES.narInfosForNar;
      expect((await indexesUsed(sql, [key])).join()).toContain("narinfos_nar_key");
    });

    test("text round-trips byte for byte, keys compare case-sensitively", async () => {
      const hash = hashOf(300);
      const text = "StorePath: /nix/store/x-ünïcødé-😀\ttab  \nURL: nar/X.nar\n\n";
      await store.putNarInfo(narInfo(300, { text }));
      expect(await store.getNarInfoText(hash)).toBe(text);
      expect(await store.getNarInfoText(hash.toUpperCase())).toBeNull();
      await store.setConfig("Key", "upper");
      await store.setConfig("key", "lower");
      expect(await store.getConfig("Key")).toBe("upper");
      expect(await store.getConfig("key")).toBe("lower");
    });

    test("eviction's LRU cursor reads through the last_accessed_at index", async () => {
      const sql = dialect === "postgres" ? POSTGRES_QUERIES.narInfosByAge : MYSQL_QUERIES.narInfosByAge;
      // a page from a cursor late in the table, as most pages of a pass are
      const at = narInfo(240).createdAt;
      const params = dialect === "postgres" ? [at, "", 10] : [at, at, "", 10];
      expect((await indexesUsed(sql, params)).join()).toContain("narinfos_last_accessed_at");
    });

    test("a query before migrating says to run ncps migrate", async () => {
      const empty = await createTestDatabase(serverUrl);
      const fresh = await openServerStore(dialect, empty.url);
      try {
        await expect(fresh.getNarInfoText(hashOf(1))).rejects.toThrow("run `ncps migrate`");
      } finally {
        await fresh.close();
        await empty.drop();
      }
    });

    test("two ncps processes starting at once on an empty database migrate it once, neither fails", async () => {
      const empty = await createTestDatabase(serverUrl);
      const dir = await mkdtemp(join(tmpdir(), "ncps-migrate-race-"));
      try {
        const script = join(dir, "replica.ts");
        const openModule = join(import.meta.dir, "../../src/db/open.ts");
        await writeFile(
          script,
          `import { openMetadataStore } from ${JSON.stringify(openModule)};
import { existsSync } from "node:fs";
const [url, go] = process.argv.slice(2);
const store = await openMetadataStore(url, { migrate: false });
while (!existsSync(go)) await Bun.sleep(1);
const applied = await store.migrate();
await store.setConfigIfAbsent("winner", String(process.pid));
await store.close();
console.log(JSON.stringify(applied));
`,
        );
        const go = join(dir, "go");
        const procs = [0, 1].map(() => Bun.spawn([process.execPath, script, empty.url, go], { stdout: "pipe", stderr: "pipe" }));
        await Bun.sleep(500); // both connected and waiting; correctness does not depend on it
        await writeFile(go, "");
        const applied = await Promise.all(
          procs.map(async (p) => {
            const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
            expect(err).toBe("");
            expect(code).toBe(0);
            return JSON.parse(out) as string[];
          }),
        );
        const names = migrationsFor(dialect).map((m) => m.name);
        expect(applied.flat().sort()).toEqual(names);
        const rows = await empty.query<{ name: string }>("SELECT name FROM schema_migrations ORDER BY name");
        expect(rows.map((r) => r.name)).toEqual(names);
      } finally {
        await rm(dir, { recursive: true, force: true });
        await empty.drop();
      }
    }, 60_000);

    test("a wrong password or user stops the open with one line, never the password", async () => {
      const secret = "s3cret-Pa55word";
      let url: string;
      if (dialect === "mysql") {
        // a real account with a password (the test server's root has none)
        const user = `ncps_pw_${process.pid}`;
        await db.query(`CREATE USER IF NOT EXISTS '${user}'@'%' IDENTIFIED BY 'right-password'`);
        url = withDatabase(serverUrl, db.name).replace(/^mysql:\/\/[^@]*@/, `mysql://${user}:${secret}@`);
        try {
          const err = await openMetadataStore(url).catch((e: unknown) => e);
          expect(err).toBeInstanceOf(DatabaseOpenError);
          const message = (err as Error).message;
          expect(message).toStartWith(`cannot connect to the mysql database mysql://${user}:***@`);
          expect(message).toContain("Access denied");
          expect(message).not.toContain(secret);
          expect(message).not.toContain("\n");
        } finally {
          await db.query(`DROP USER IF EXISTS '${user}'@'%'`);
        }
      } else {
        // the test server trusts local connections, so an unknown role is what fails here
        url = withDatabase(serverUrl, db.name).replace(/^postgres(ql)?:\/\/[^@]*@/, `postgres://no_such_role:${secret}@`);
        const err = await openMetadataStore(url).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(DatabaseOpenError);
        const message = (err as Error).message;
        expect(message).toStartWith("cannot connect to the postgres database postgres://no_such_role:***@");
        expect(message).toContain('role "no_such_role" does not exist');
        expect(message).not.toContain(secret);
        expect(message).not.toContain("\n");
      }
    });

    test("a missing database stops the open with one line", async () => {
      const url = withDatabase(serverUrl, "ncps_no_such_database");
      const err = await openMetadataStore(url).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DatabaseOpenError);
      expect((err as Error).message).toMatch(/^cannot connect to the (postgres|mysql) database .*ncps_no_such_database: .*(does not exist|Unknown database)/);
    });

    test("openMetadataStore migrates, and honours the pool size", async () => {
      const empty = await createTestDatabase(serverUrl);
      const opened = await openMetadataStore(empty.url, { pool: { maxOpenConns: 2, maxIdleConns: 1 } });
      try {
        expect(opened.dialect).toBe(dialect);
        expect((await opened.migrationStatus()).every((m) => m.applied)).toBe(true);
        // many concurrent requests share the two connections
        await Promise.all(Array.from({ length: 40 }, (_, i) => opened.putNarInfo(narInfo(400 + i))));
        const counted = await Promise.all(Array.from({ length: 40 }, (_, i) => opened.getNarInfoText(hashOf(400 + i))));
        expect(counted.every((t) => t !== null)).toBe(true);
        const sessions =
          dialect === "postgres"
            ? await empty.query<{ n: number | string }>("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'ncps' AND pid <> pg_backend_pid()", [empty.name])
            : await empty.query<{ n: number | string }>("SELECT count(*) AS n FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()", [empty.name]);
        expect(Number(sessions[0]!.n)).toBeLessThanOrEqual(2);
        expect(Number(sessions[0]!.n)).toBeGreaterThanOrEqual(1);
      } finally {
        await opened.close();
        await empty.drop();
      }
    });
  });
}

async function postgresIndexes(db: TestDatabase, sql: string, params: unknown[]): Promise<string[]> {
  const rows = await db.query<{ "QUERY PLAN": unknown }>(`EXPLAIN (FORMAT JSON) ${sql}`, params);
  const plan = rows[0]!["QUERY PLAN"];
  const found: string[] = [];
  const walk = (node: Record<string, unknown>) => {
    if (typeof node["Index Name"] === "string") found.push(`${node["Node Type"]}:${node["Index Name"]}`);
    else if (typeof node["Node Type"] === "string" && /Scan/.test(node["Node Type"])) found.push(`${node["Node Type"]}:`);
    for (const child of (node.Plans as Record<string, unknown>[] | undefined) ?? []) walk(child);
  };
  walk(((typeof plan === "string" ? JSON.parse(plan) : plan) as { Plan: Record<string, unknown> }[])[0]!.Plan);
  return found;
}

for (const dialect of ["postgres", "mysql"] as const) {
  const server = await testServer(dialect);
  if (server.url === null) {
    testIf(false, `${dialect} MetadataStore tests: ${server.problem}`)(`MetadataStore contract: ${dialect}`, () => {});
  } else {
    describeMetadataStore(dialect, serverHarness(dialect, server.url));
    describeServerSpecifics(dialect, server.url);
  }
}

describe("openMetadataStore (postgres, mysql) without a server", () => {
  test("a closed port gives one line naming the address, never the password", async () => {
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = probe.port;
    probe.stop(true);
    for (const scheme of ["postgres", "mysql"]) {
      const err = await openMetadataStore(`${scheme}://u:hunter2@127.0.0.1:${port}/db`).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DatabaseOpenError);
      expect((err as Error).message).toBe(
        `cannot connect to the ${scheme} database ${scheme}://u:***@127.0.0.1:${port}/db: connection refused by 127.0.0.1:${port}`,
      );
    }
  });

  test("a server that never answers gives up after connect_timeout with one line", async () => {
    // accepts the connection and says nothing: a firewall or a hung server
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      for (const scheme of ["postgres", "mysql"]) {
        const url = `${scheme}://u:hunter2@127.0.0.1:${silent.port}/db?connect_timeout=1`;
        const err = await openMetadataStore(url).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(DatabaseOpenError);
        expect((err as Error).message).toBe(
          `cannot connect to the ${scheme} database ${scheme}://u:***@127.0.0.1:${silent.port}/db?connect_timeout=1: no answer from 127.0.0.1:${silent.port} in time (connect_timeout)`,
        );
      }
    } finally {
      silent.stop(true);
    }
  }, 30_000);

  test("a missing unix socket gives one line naming it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ncps-nosock-"));
    try {
      for (const [url, where] of [
        [`postgres+unix://${dir}/db`, dir],
        [`mysql+unix://${dir}/mysqld.sock/db`, `${dir}/mysqld.sock`],
      ] as const) {
        const err = await openMetadataStore(url).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(DatabaseOpenError);
        expect((err as Error).message).toEndWith(`: no socket at ${where}`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
