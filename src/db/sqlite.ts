/** MetadataStore on bun:sqlite. Calls are synchronous under the async interface: each method
 * runs to completion (a write in one IMMEDIATE transaction) before it returns, so in-process
 * callers never interleave inside a transaction; other processes on the same file wait on
 * busy_timeout. */
import { Database, type Statement } from "bun:sqlite";
import { chmodSync, closeSync, openSync } from "node:fs";
import type { ChunkRecord, ChunkState, MetadataStore, NarInfoAge, NarInfoListing, NarInfoRecord, NarRecord, Pin, RealisationRecord, StoredCounts } from "./metadata-store.ts";
import { migrateUnderLock, type MigrationDriver } from "./engine.ts";
import {
  chunkFromRow,
  chunkStateOf,
  FIRST_AGE,
  FIRST_KEY,
  NARINFO_AGE_COLUMNS,
  NARINFO_COLUMNS,
  narFromRow,
  narInfoAgeFromRow,
  narInfoFromRow,
  narInfoListingFromRow,
  narInfoValues,
  narValues,
  pinFromRow,
  REALISATION_COLUMNS,
  realisationFromRow,
  realisationValues,
  referencesByHash,
  STORED_BYTES,
  type ChunkRow,
  type NarInfoAgeRow,
  type NarInfoListingRow,
  type NarInfoRow,
  type NarRow,
  type PinRow,
  type RealisationRow,
} from "./rows.ts";
import { migrationStatusOf, migrationsFor, type Migration } from "./migrations.ts";

const NARINFO_VALUES = "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?";

/** The statements the store runs, by name: exported so tests can check their query plans. */
export const SQLITE_QUERIES = {
  narInfoText: "SELECT text FROM narinfos WHERE hash = ?",
  narInfo: "SELECT * FROM narinfos WHERE hash = ?",
  narInfosForNar: "SELECT * FROM narinfos WHERE nar_key = ? ORDER BY hash",
  references: "SELECT reference FROM narinfo_references WHERE hash = ? ORDER BY reference",
  upsertNarInfo: `INSERT INTO narinfos (${NARINFO_COLUMNS}) VALUES (${NARINFO_VALUES})
    ON CONFLICT (hash) DO UPDATE SET store_path = excluded.store_path, text = excluded.text,
      nar_key = excluded.nar_key, upstream = excluded.upstream, upstream_nar_url = excluded.upstream_nar_url,
      compression = excluded.compression, file_hash = excluded.file_hash, file_size = excluded.file_size,
      nar_hash = excluded.nar_hash, nar_size = excluded.nar_size, created_at = excluded.created_at,
      last_accessed_at = max(narinfos.last_accessed_at, excluded.last_accessed_at)`,
  insertNarInfoIfAbsent: `INSERT INTO narinfos (${NARINFO_COLUMNS}) VALUES (${NARINFO_VALUES})
    ON CONFLICT (hash) DO NOTHING`,
  deleteReferences: "DELETE FROM narinfo_references WHERE hash = ?",
  insertReference: "INSERT OR IGNORE INTO narinfo_references (hash, reference) VALUES (?, ?)",
  deleteNarInfo: "DELETE FROM narinfos WHERE hash = ?",
  // a realisation goes with the narinfo of its output path
  deleteRealisationsOf: "DELETE FROM realisations WHERE out_hash = ?",
  realisation: `SELECT ${REALISATION_COLUMNS} FROM realisations WHERE id = ?`,
  insertRealisationIfAbsent: `INSERT INTO realisations (${REALISATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
  nar: "SELECT key, size, file_hash, nar_hash, created_at, chunked FROM nars WHERE key = ?",
  upsertNar: `INSERT INTO nars (key, size, file_hash, nar_hash, created_at, last_accessed_at, chunked) VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET size = excluded.size, file_hash = excluded.file_hash, chunked = excluded.chunked,
      nar_hash = excluded.nar_hash, created_at = excluded.created_at,
      last_accessed_at = max(nars.last_accessed_at, excluded.last_accessed_at)`,
  deleteNar: "DELETE FROM nars WHERE key = ?",
  touchNarInfo: "UPDATE narinfos SET last_accessed_at = max(last_accessed_at, ?) WHERE hash = ?",
  // the NAR a narinfo names is what LRU eviction frees, so its access time follows
  touchNarOfNarInfo: `UPDATE nars SET last_accessed_at = max(last_accessed_at, ?)
    WHERE key = (SELECT nar_key FROM narinfos WHERE hash = ?)`,
  narKeyNamed: "SELECT 1 FROM narinfos WHERE nar_key = ? LIMIT 1",
  storedBytes: `SELECT value FROM stats WHERE name = '${STORED_BYTES}'`,
  storedCounts: `SELECT (SELECT COUNT(*) FROM narinfos) AS narinfos, (SELECT COUNT(*) FROM nars) AS nars`,
  addStoredBytes: `UPDATE stats SET value = value + ? WHERE name = '${STORED_BYTES}'`,
  setStoredBytes: `INSERT INTO stats (name, value) VALUES ('${STORED_BYTES}', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value`,
  /** fsck only: the one statement that reads every NAR record */
  sumNarSizes: "SELECT (SELECT COALESCE(SUM(size), 0) FROM nars) + (SELECT COALESCE(SUM(size), 0) FROM chunks) AS total",
  deleteNarChunks: "DELETE FROM nar_chunks WHERE nar_key = ?",
  chunk: "SELECT hash, size, nar_bytes, stored, doomed_at FROM chunks WHERE hash = ?",
  insertChunk: "INSERT INTO chunks (hash, size, nar_bytes, stored, last_used_at) VALUES (?, ?, ?, 0, ?)",
  touchChunk: "UPDATE chunks SET last_used_at = max(last_used_at, ?) WHERE hash = ? AND doomed_at IS NULL",
  markChunkStored: "UPDATE chunks SET stored = 1 WHERE hash = ?",
  insertNarChunk: "INSERT INTO nar_chunks (nar_key, position, chunk_hash) VALUES (?, ?, ?)",
  narChunks: `SELECT c.hash, c.size, c.nar_bytes FROM nar_chunks n JOIN chunks c ON c.hash = n.chunk_hash
    WHERE n.nar_key = ? ORDER BY n.position`,
  unusedChunks: `SELECT hash, size, nar_bytes FROM chunks c WHERE doomed_at IS NULL AND last_used_at < ?
    AND NOT EXISTS (SELECT 1 FROM nar_chunks n WHERE n.chunk_hash = c.hash) ORDER BY last_used_at, hash LIMIT ?`,
  doomChunk: "UPDATE chunks SET doomed_at = ? WHERE hash = ? AND doomed_at IS NULL",
  doomedChunks: "SELECT hash, size, nar_bytes FROM chunks WHERE doomed_at IS NOT NULL AND doomed_at <= ? ORDER BY hash LIMIT ?",
  deleteDoomedChunk: "DELETE FROM chunks WHERE hash = ? AND doomed_at IS NOT NULL",
  listChunks: "SELECT hash, size, nar_bytes, stored, doomed_at FROM chunks WHERE hash > ? ORDER BY hash LIMIT ?",
  narInfosByAge: `SELECT ${NARINFO_AGE_COLUMNS} FROM narinfos WHERE (last_accessed_at, hash) > (?, ?)
    ORDER BY last_accessed_at, hash LIMIT ?`,
  listNarInfos: "SELECT hash, nar_key, upstream FROM narinfos WHERE hash > ? ORDER BY hash LIMIT ?",
  listNars: "SELECT key, size, file_hash, nar_hash, created_at, chunked FROM nars WHERE key > ? ORDER BY key LIMIT ?",
  addPin: "INSERT INTO pins (hash, store_path, created_at) VALUES (?, ?, ?) ON CONFLICT (hash) DO NOTHING",
  removePin: "DELETE FROM pins WHERE hash = ?",
  /** every pin: a short table, read whole */
  listPins: "SELECT hash, store_path, created_at FROM pins ORDER BY created_at, hash",
  config: "SELECT value FROM config WHERE key = ?",
  setConfig: "INSERT INTO config (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
  insertConfigIfAbsent: "INSERT INTO config (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
} as const;

type QueryName = keyof typeof SQLITE_QUERIES;

export class SqliteMetadataStore implements MetadataStore {
  readonly dialect = "sqlite" as const;
  private readonly db: Database;
  private statements: Record<QueryName, Statement> | null = null;
  private readonly migrations: Migration[];

  /** Opens (creating if needed) the database file. Does not migrate: call `migrate()`. */
  constructor(path: string, migrations: Migration[] = migrationsFor("sqlite")) {
    this.migrations = migrations;
    const onDisk = path !== ":memory:" && path !== "" && !path.startsWith("file:");
    // The database holds the signing key: created 0600, and SQLite gives its -wal and -shm
    // files the database file's mode.
    if (onDisk) {
      createPrivate(path);
      for (const file of [path, `${path}-wal`, `${path}-shm`]) checkWritable(file);
    }
    this.db = new Database(path, { create: true, readwrite: true, strict: true });
    try {
      // busy_timeout first: switching to WAL itself needs the lock another process may hold
      this.db.run("PRAGMA busy_timeout = 5000");
      this.db.run("PRAGMA journal_mode = WAL");
      this.db.run("PRAGMA synchronous = NORMAL");
      this.db.run("PRAGMA foreign_keys = ON");
      // a database made by an earlier version may be 0644: none of these is for others to read
      if (onDisk) for (const file of [path, `${path}-wal`, `${path}-shm`]) chmodIfPresent(file, 0o600);
    } catch (err) {
      this.db.close();
      throw err;
    }
  }

  /** Statements are prepared once, on first use after the schema exists. */
  private get q(): Record<QueryName, Statement> {
    if (this.statements) return this.statements;
    const prepared = {} as Record<QueryName, Statement>;
    try {
      for (const name of Object.keys(SQLITE_QUERIES) as QueryName[]) prepared[name] = this.db.prepare(SQLITE_QUERIES[name]);
    } catch (err) {
      if (/no such table/.test((err as Error).message)) {
        throw new Error("the sqlite database schema is missing or out of date: run `ncps migrate`");
      }
      throw err;
    }
    this.statements = prepared;
    return prepared;
  }

  migrate(opts: { dryRun?: boolean } = {}): Promise<string[]> {
    return migrateUnderLock(this.migrations, this.migrationDriver(), opts);
  }

  /** The lock is the file's: each migration in its own IMMEDIATE transaction, re-checked
   * inside it, since another process may have applied it since we looked. */
  private migrationDriver(): MigrationDriver {
    const applied = async () => this.appliedMigrations();
    return {
      applied,
      locked: async (body) => {
        this.db.run("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT NOT NULL PRIMARY KEY, applied_at INTEGER NOT NULL)");
        try {
          return await body({
            applied,
            apply: async (migration) =>
              this.db
                .transaction(() => {
                  const done = this.db.prepare("SELECT 1 FROM schema_migrations WHERE name = ?").get(migration.name);
                  if (done) return false;
                  this.db.run(migration.sql);
                  this.db.prepare("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)").run(migration.name, Date.now());
                  return true;
                })
                .immediate(),
          });
        } finally {
          this.finalizeStatements(); // the schema changed: prepare again on next use
        }
      },
    };
  }

  async migrationStatus(): Promise<{ name: string; applied: boolean }[]> {
    return migrationStatusOf(this.migrations, this.appliedMigrations());
  }

  private appliedMigrations(): Set<string> {
    const table = this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").get();
    if (!table) return new Set();
    const rows = this.db.prepare("SELECT name FROM schema_migrations").all() as { name: string }[];
    return new Set(rows.map((r) => r.name));
  }

  async getNarInfoText(hash: string): Promise<string | null> {
    const row = this.q.narInfoText.get(hash) as { text: string } | null;
    return row ? row.text : null;
  }

  async getNarInfo(hash: string): Promise<NarInfoRecord | null> {
    const q = this.q;
    // one read transaction: the row and its references from the same snapshot
    return this.db
      .transaction(() => {
        const row = q.narInfo.get(hash) as NarInfoRow | null;
        return row ? this.toNarInfoRecord(row) : null;
      })
      .deferred();
  }

  async putNarInfo(rec: NarInfoRecord): Promise<void> {
    const q = this.q;
    this.db
      .transaction(() => {
        q.upsertNarInfo.run(...narInfoValues(rec));
        q.deleteReferences.run(rec.hash);
        for (const ref of rec.references) q.insertReference.run(rec.hash, ref);
      })
      .immediate();
  }

  async insertNarInfoIfAbsent(rec: NarInfoRecord): Promise<boolean> {
    const q = this.q;
    return this.db
      .transaction(() => {
        if (q.insertNarInfoIfAbsent.run(...narInfoValues(rec)).changes === 0) return false;
        for (const ref of rec.references) q.insertReference.run(rec.hash, ref);
        return true;
      })
      .immediate();
  }

  async deleteNarInfo(hash: string): Promise<boolean> {
    const q = this.q;
    // references go with it (ON DELETE CASCADE)
    return this.db
      .transaction(() => {
        q.deleteRealisationsOf.run(hash);
        return q.deleteNarInfo.run(hash).changes > 0;
      })
      .immediate();
  }

  async narInfosForNar(narKey: string): Promise<NarInfoRecord[]> {
    const q = this.q;
    return this.db
      .transaction(() => (q.narInfosForNar.all(narKey) as NarInfoRow[]).map((row) => this.toNarInfoRecord(row)))
      .deferred();
  }

  async getNar(key: string): Promise<NarRecord | null> {
    const row = this.q.nar.get(key) as NarRow | null;
    return row ? narFromRow(row) : null;
  }

  async putNar(rec: NarRecord): Promise<void> {
    const q = this.q;
    this.db
      .transaction(() => {
        const old = q.nar.get(rec.key) as NarRow | null;
        q.upsertNar.run(...narValues({ ...rec, chunked: false }));
        q.deleteNarChunks.run(rec.key); // a chunked record it replaces
        const delta = rec.size - (old ? Number(old.size) : 0);
        if (delta !== 0) q.addStoredBytes.run(delta);
      })
      .immediate();
  }

  async deleteNar(key: string): Promise<boolean> {
    const q = this.q;
    return this.db
      .transaction(() => {
        const old = q.nar.get(key) as NarRow | null;
        if (!old || q.deleteNar.run(key).changes === 0) return false;
        q.addStoredBytes.run(-Number(old.size));
        return true;
      })
      .immediate();
  }

  async deleteNarInfos(hashes: string[]): Promise<number> {
    const q = this.q;
    return this.db
      .transaction(() =>
        hashes.reduce((n, hash) => {
          q.deleteRealisationsOf.run(hash);
          return n + q.deleteNarInfo.run(hash).changes;
        }, 0),
      )
      .immediate();
  }

  async namedNarKeys(narKeys: string[]): Promise<Set<string>> {
    const q = this.q;
    return new Set(narKeys.filter((key) => q.narKeyNamed.get(key) !== null));
  }

  async deleteNars(keys: string[]): Promise<NarRecord[]> {
    const q = this.q;
    return this.db
      .transaction(() => {
        const removed: NarRecord[] = [];
        for (const key of new Set(keys)) {
          const row = q.nar.get(key) as NarRow | null;
          if (row && q.deleteNar.run(key).changes > 0) removed.push(narFromRow(row));
        }
        const freed = removed.reduce((n, r) => n + r.size, 0);
        if (freed !== 0) q.addStoredBytes.run(-freed);
        return removed;
      })
      .immediate();
  }

  async reserveChunks(chunks: ChunkRecord[], at: number): Promise<Map<string, ChunkState>> {
    const q = this.q;
    return this.db
      .transaction(() => {
        const states = new Map<string, ChunkState>();
        let added = 0;
        for (const c of chunks) {
          if (states.has(c.hash)) continue;
          const row = q.chunk.get(c.hash) as ChunkRow | null;
          if (row) {
            states.set(c.hash, chunkStateOf(row));
            q.touchChunk.run(at, c.hash);
          } else {
            q.insertChunk.run(c.hash, c.size, c.narBytes, at);
            added += c.size;
            states.set(c.hash, "unstored");
          }
        }
        if (added !== 0) q.addStoredBytes.run(added);
        return states;
      })
      .immediate();
  }

  async markChunksStored(hashes: string[]): Promise<void> {
    const q = this.q;
    this.db.transaction(() => hashes.forEach((h) => q.markChunkStored.run(h))).immediate();
  }

  async putChunkedNar(rec: NarRecord, chunkHashes: string[], at: number): Promise<boolean> {
    const q = this.q;
    return this.db
      .transaction(() => {
        for (const h of new Set(chunkHashes)) if (q.touchChunk.run(at, h).changes === 0) return false;
        const old = q.nar.get(rec.key) as NarRow | null;
        q.upsertNar.run(...narValues({ ...rec, size: 0, chunked: true }));
        q.deleteNarChunks.run(rec.key);
        chunkHashes.forEach((h, i) => q.insertNarChunk.run(rec.key, i, h));
        if (old && Number(old.size) !== 0) q.addStoredBytes.run(-Number(old.size));
        return true;
      })
      .immediate();
  }

  async getChunk(hash: string): Promise<(ChunkRecord & { state: ChunkState }) | null> {
    const row = this.q.chunk.get(hash) as ChunkRow | null;
    return row ? { ...chunkFromRow(row), state: chunkStateOf(row) } : null;
  }

  async narChunks(key: string): Promise<ChunkRecord[]> {
    return (this.q.narChunks.all(key) as ChunkRow[]).map(chunkFromRow);
  }

  async doomUnusedChunks(usedBefore: number, limit: number, at: number): Promise<ChunkRecord[]> {
    const q = this.q;
    // one writer at a time: what the select finds unused is still unused when doomed
    return this.db
      .transaction(() => {
        const earlier = (q.doomedChunks.all(at, limit) as ChunkRow[]).map(chunkFromRow);
        const unused = (q.unusedChunks.all(usedBefore, limit) as ChunkRow[]).map(chunkFromRow);
        for (const c of unused) q.doomChunk.run(at, c.hash);
        return [...earlier, ...unused];
      })
      .immediate();
  }

  async deleteDoomedChunks(hashes: string[]): Promise<number> {
    const q = this.q;
    return this.db
      .transaction(() => {
        let deleted = 0;
        let freed = 0;
        for (const h of new Set(hashes)) {
          const row = q.chunk.get(h) as ChunkRow | null;
          if (row && q.deleteDoomedChunk.run(h).changes > 0) {
            deleted++;
            freed += Number(row.size);
          }
        }
        if (freed !== 0) q.addStoredBytes.run(-freed);
        return deleted;
      })
      .immediate();
  }

  async listChunks(limit: number, after: string = FIRST_KEY): Promise<(ChunkRecord & { state: ChunkState })[]> {
    return (this.q.listChunks.all(after, limit) as ChunkRow[]).map((row) => ({ ...chunkFromRow(row), state: chunkStateOf(row) }));
  }

  async storedBytes(): Promise<number> {
    const row = this.q.storedBytes.get() as { value: number } | null;
    return row ? Number(row.value) : 0;
  }

  async storedCounts(): Promise<StoredCounts> {
    const row = this.q.storedCounts.get() as { narinfos: number; nars: number };
    return { narInfos: row.narinfos, nars: row.nars };
  }

  async recountStoredBytes(): Promise<{ before: number; after: number }> {
    const q = this.q;
    return this.db
      .transaction(() => {
        const before = (q.storedBytes.get() as { value: number } | null)?.value ?? 0;
        const after = Number((q.sumNarSizes.get() as { total: number }).total);
        q.setStoredBytes.run(after);
        return { before: Number(before), after };
      })
      .immediate();
  }

  async narInfosByAge(limit: number, after: { lastAccessedAt: number; hash: string } = FIRST_AGE): Promise<NarInfoAge[]> {
    const rows = this.q.narInfosByAge.all(after.lastAccessedAt, after.hash, limit) as NarInfoAgeRow[];
    return rows.map(narInfoAgeFromRow);
  }

  async referencesOf(hashes: string[]): Promise<Map<string, string[]>> {
    const q = this.q;
    return this.db
      .transaction(() => {
        const rows = hashes.flatMap((hash) => (q.references.all(hash) as { reference: string }[]).map((r) => ({ hash, reference: r.reference })));
        return referencesByHash(hashes, rows);
      })
      .deferred();
  }

  async listNarInfos(limit: number, after: string = FIRST_KEY): Promise<NarInfoListing[]> {
    return (this.q.listNarInfos.all(after, limit) as NarInfoListingRow[]).map(narInfoListingFromRow);
  }

  async listNars(limit: number, after: string = FIRST_KEY): Promise<NarRecord[]> {
    return (this.q.listNars.all(after, limit) as NarRow[]).map(narFromRow);
  }

  async getRealisation(id: string): Promise<RealisationRecord | null> {
    const row = this.q.realisation.get(id) as RealisationRow | null;
    return row ? realisationFromRow(row) : null;
  }

  async insertRealisationIfAbsent(rec: RealisationRecord): Promise<boolean> {
    return this.q.insertRealisationIfAbsent.run(...realisationValues(rec)).changes > 0;
  }

  async addPin(pin: Pin): Promise<boolean> {
    return this.q.addPin.run(pin.hash, pin.storePath, pin.createdAt).changes > 0;
  }

  async removePin(hash: string): Promise<boolean> {
    return this.q.removePin.run(hash).changes > 0;
  }

  async listPins(): Promise<Pin[]> {
    return (this.q.listPins.all() as PinRow[]).map(pinFromRow);
  }

  async touch(hashes: string[], at: number): Promise<void> {
    if (hashes.length === 0) return;
    const q = this.q;
    this.db
      .transaction(() => {
        for (const hash of hashes) {
          q.touchNarInfo.run(at, hash);
          q.touchNarOfNarInfo.run(at, hash);
        }
      })
      .immediate();
  }

  async getConfig(key: string): Promise<string | null> {
    const row = this.q.config.get(key) as { value: string } | null;
    return row ? row.value : null;
  }

  async setConfig(key: string, value: string): Promise<void> {
    this.q.setConfig.run(key, value);
  }

  async setConfigIfAbsent(key: string, value: string): Promise<string> {
    const q = this.q;
    return this.db
      .transaction(() => {
        q.insertConfigIfAbsent.run(key, value);
        return (q.config.get(key) as { value: string }).value;
      })
      .immediate();
  }

  async close(): Promise<void> {
    this.finalizeStatements();
    this.db.close();
  }

  private finalizeStatements() {
    if (this.statements) for (const s of Object.values(this.statements)) s.finalize();
    this.statements = null;
  }

  private toNarInfoRecord(row: NarInfoRow): NarInfoRecord {
    const refs = this.q.references.all(row.hash) as { reference: string }[];
    return narInfoFromRow(row, refs.map((r) => r.reference));
  }
}

/** Creates an empty file readable by its owner only, unless it exists. Other failures are left
 * to SQLite's open, which reports them. */
function createPrivate(path: string) {
  try {
    closeSync(openSync(path, "wx", 0o600));
  } catch {}
}

/** SQLite opens a file it cannot write read-only without a word, and a -shm file it cannot
 * write kills the process (SIGBUS on its memory map) at the first write: refuse to start
 * instead, with the reason. (A file that becomes unwritable while ncps runs: writes fail per
 * request, except -shm, which still kills the process; see the README.) */
function checkWritable(path: string) {
  try {
    closeSync(openSync(path, "r+"));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return;
    const hint = code === "EPERM" ? " (immutable? see lsattr)" : "";
    throw new Error(`${path} is not writable: ${code ?? (err as Error).message}${hint}`);
  }
}

/** Another owner's file (EPERM) is left as it is: the database still opens. */
function chmodIfPresent(path: string, mode: number) {
  try {
    chmodSync(path, mode);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "ENOENT" && code !== "EPERM") throw err;
  }
}
