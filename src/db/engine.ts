/** The flow every engine shares, written once: connect and check, migrate under a lock,
 * writes in a fixed row order, set-if-absent. Each engine brings its SQL and its driver's
 * calls; `ServerMetadataStore` is the whole MetadataStore of the two server engines
 * (postgres, mysql), which differ only in those. */
import type { ChunkRecord, ChunkState, MetadataStore, NarInfoAge, NarInfoListing, NarInfoRecord, NarRecord, Pin, RealisationRecord, StoredCounts } from "./metadata-store.ts";
import { migrationStatusOf, pendingMigrations, type Migration } from "./migrations.ts";
import {
  chunkFromRow,
  chunkStateOf,
  FIRST_AGE,
  FIRST_KEY,
  narFromRow,
  narInfoAgeFromRow,
  narInfoFromRow,
  narInfoListingFromRow,
  narInfoValues,
  narValues,
  pinFromRow,
  realisationFromRow,
  realisationValues,
  referencesByHash,
  sortedChunks,
  sortedUnique,
  type ChunkRow,
  type NarInfoAgeRow,
  type NarInfoListingRow,
  type NarInfoRow,
  type NarRow,
  type PinRow,
  type RealisationRow,
} from "./rows.ts";


/** A chunk a NAR was to be recorded with was doomed or gone: the transaction is undone. */
class ChunkGone extends Error {}

/** Creates a pool and runs one statement on it, so a wrong address or password fails now,
 * not at the first request; the pool is closed again when it fails. */
export async function connectChecked<P>(pool: P, check: (pool: P) => Promise<unknown>, end: (pool: P) => Promise<unknown>): Promise<P> {
  try {
    await check(pool);
  } catch (err) {
    await end(pool).catch(() => {});
    throw err;
  }
  return pool;
}

/** One engine's migration bookkeeping: what is applied, and a session under its lock. */
export interface MigrationDriver {
  applied(): Promise<Set<string>>;
  /** Runs `body` holding the engine's migration lock, schema_migrations created. */
  locked<T>(body: (session: MigrationSession) => Promise<T>): Promise<T>;
}

export interface MigrationSession {
  applied(): Promise<Set<string>>;
  /** Runs the migration and records it; false when another process applied it meanwhile. */
  apply(migration: Migration): Promise<boolean>;
}

/** Applies the pending migrations, re-read under the lock so a replica that waited for
 * another finds them applied and does nothing. Returns the names applied (with `dryRun`,
 * those that would be). */
export async function migrateUnderLock(migrations: readonly Migration[], driver: MigrationDriver, opts: { dryRun?: boolean }): Promise<string[]> {
  const pending = pendingMigrations(migrations, await driver.applied());
  if (opts.dryRun || pending.length === 0) return pending.map((m) => m.name);
  return driver.locked(async (session) => {
    const done: string[] = [];
    for (const migration of pendingMigrations(migrations, await session.applied())) {
      if (await session.apply(migration)) done.push(migration.name);
    }
    return done;
  });
}

/** The statements of a server engine, by name, in its SQL dialect. */
export type ServerQueries = Record<
  | "narInfoText"
  | "narInfo"
  | "narInfosForNar"
  | "upsertNarInfo"
  | "insertNarInfoIfAbsent"
  | "deleteReferences"
  | "insertReferences"
  | "deleteNarInfo"
  | "deleteRealisationsOf"
  | "realisation"
  | "insertRealisationIfAbsent"
  | "nar"
  | "upsertNar"
  | "deleteNar"
  | "touchNarInfos"
  | "touchNarsOfNarInfos"
  | "lockStoredBytes"
  | "narSizeForUpdate"
  | "storedBytes"
  | "storedCounts"
  | "addStoredBytes"
  | "setStoredBytes"
  | "sumNarSizes"
  | "deleteNarChunks"
  | "chunk"
  | "chunksForUpdate"
  | "insertChunks"
  | "touchChunks"
  | "markChunksStored"
  | "insertNarChunks"
  | "narChunks"
  | "unusedChunks"
  | "doomChunks"
  | "chunkCandidatesForUpdate"
  | "heldChunks"
  | "doomedChunks"
  | "doomedChunksForUpdate"
  | "deleteChunks"
  | "listChunks"
  | "narInfosByAge"
  | "deleteNarInfos"
  | "namedNarKeys"
  | "narsForUpdate"
  | "deleteNars"
  | "referencesOf"
  | "listNarInfos"
  | "listNars"
  | "addPin"
  | "removePin"
  | "listPins"
  | "config"
  | "setConfig"
  | "insertConfigIfAbsent",
  string
>;
export type ServerQueryName = keyof ServerQueries;
export type ServerParam = string | number | null | unknown[];

/** A narinfo row read with its references in one statement (one snapshot), encoded as the
 * driver returns them. */
export type NarInfoRowWithRefs<Refs> = NarInfoRow & { refs: Refs };

/** MetadataStore over a server's connection pool `Db`, whose transactions are `Tx`. The
 * engine supplies running a named statement (rows read, rows changed), a write transaction
 * retried when the server aborts it, and the encodings of references. */
export abstract class ServerMetadataStore<Db, Tx, Refs> implements MetadataStore {
  abstract readonly dialect: "postgres" | "mysql";
  protected abstract readonly pool: Db;
  protected abstract readonly migrations: Migration[];

  protected abstract rows<T>(db: Db | Tx, name: ServerQueryName, params: ServerParam[]): Promise<T[]>;
  /** Rows inserted, updated or deleted (a no-op update counts none). */
  protected abstract changes(db: Db | Tx, name: ServerQueryName, params: ServerParam[]): Promise<number>;
  protected abstract write<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  protected abstract migrationDriver(): MigrationDriver;
  /** The references as `insertReferences` takes them (sorted, without duplicates). */
  protected abstract referenceParams(hash: string, references: string[]): ServerParam[];
  protected abstract decodeReferences(refs: Refs): string[];
  abstract close(): Promise<void>;

  migrate(opts: { dryRun?: boolean } = {}): Promise<string[]> {
    return migrateUnderLock(this.migrations, this.migrationDriver(), opts);
  }

  async migrationStatus(): Promise<{ name: string; applied: boolean }[]> {
    return migrationStatusOf(this.migrations, await this.migrationDriver().applied());
  }

  async getNarInfoText(hash: string): Promise<string | null> {
    const [row] = await this.rows<{ text: string }>(this.pool, "narInfoText", [hash]);
    return row ? row.text : null;
  }

  async getNarInfo(hash: string): Promise<NarInfoRecord | null> {
    const [row] = await this.rows<NarInfoRowWithRefs<Refs>>(this.pool, "narInfo", [hash]);
    return row ? narInfoFromRow(row, this.decodeReferences(row.refs)) : null;
  }

  async putNarInfo(rec: NarInfoRecord): Promise<void> {
    await this.write(async (tx) => {
      await this.changes(tx, "upsertNarInfo", narInfoValues(rec));
      await this.changes(tx, "deleteReferences", [rec.hash]);
      await this.insertReferences(tx, rec);
    });
  }

  async insertNarInfoIfAbsent(rec: NarInfoRecord): Promise<boolean> {
    return this.write(async (tx) => {
      // a concurrent insert of the same hash waits for ours to commit, then changes nothing
      if ((await this.changes(tx, "insertNarInfoIfAbsent", narInfoValues(rec))) === 0) return false;
      await this.insertReferences(tx, rec);
      return true;
    });
  }

  private async insertReferences(tx: Tx, rec: NarInfoRecord): Promise<void> {
    if (rec.references.length > 0) await this.changes(tx, "insertReferences", this.referenceParams(rec.hash, sortedUnique(rec.references)));
  }

  async deleteNarInfo(hash: string): Promise<boolean> {
    // references go with it (ON DELETE CASCADE); realisations of the path with it
    return this.write(async (tx) => {
      await this.changes(tx, "deleteRealisationsOf", [[hash]]);
      return (await this.changes(tx, "deleteNarInfo", [hash])) > 0;
    });
  }

  async narInfosForNar(narKey: string): Promise<NarInfoRecord[]> {
    const rows = await this.rows<NarInfoRowWithRefs<Refs>>(this.pool, "narInfosForNar", [narKey]);
    return rows.map((row) => narInfoFromRow(row, this.decodeReferences(row.refs)));
  }

  async getNar(key: string): Promise<NarRecord | null> {
    const [row] = await this.rows<NarRow>(this.pool, "nar", [key]);
    return row ? narFromRow(row) : null;
  }

  /** The parameters of `narInfosByAge` (a dialect may need the time twice). */
  protected ageParams(after: { lastAccessedAt: number; hash: string }, limit: number): ServerParam[] {
    return [after.lastAccessedAt, after.hash, limit];
  }

  // NAR record writes first lock the stored-bytes row, then read the record they change: they
  // commit one at a time, so each reads the size the previous one left and the figure stays
  // exact (a new key written by two connections at once is otherwise counted twice).
  async putNar(rec: NarRecord): Promise<void> {
    await this.write(async (tx) => {
      await this.rows(tx, "lockStoredBytes", []);
      const [old] = await this.rows<{ size: number }>(tx, "narSizeForUpdate", [rec.key]);
      await this.changes(tx, "upsertNar", narValues({ ...rec, chunked: false }));
      await this.changes(tx, "deleteNarChunks", [rec.key]); // a chunked record it replaces
      const delta = rec.size - (old ? Number(old.size) : 0);
      if (delta !== 0) await this.changes(tx, "addStoredBytes", [delta]);
    });
  }

  async deleteNar(key: string): Promise<boolean> {
    // nothing to delete: no need to queue for the stored-bytes row (a record written after
    // this read is one written after the delete)
    if ((await this.rows(this.pool, "nar", [key])).length === 0) return false;
    return this.write(async (tx) => {
      await this.rows(tx, "lockStoredBytes", []);
      const [old] = await this.rows<{ size: number }>(tx, "narSizeForUpdate", [key]);
      if (!old || (await this.changes(tx, "deleteNar", [key])) === 0) return false;
      await this.changes(tx, "addStoredBytes", [-Number(old.size)]);
      return true;
    });
  }

  async deleteNarInfos(hashes: string[]): Promise<number> {
    let deleted = 0;
    for (const chunk of sortedChunks(hashes)) {
      deleted += await this.write(async (tx) => {
        await this.changes(tx, "deleteRealisationsOf", [chunk]);
        return this.changes(tx, "deleteNarInfos", [chunk]);
      });
    }
    return deleted;
  }

  async namedNarKeys(narKeys: string[]): Promise<Set<string>> {
    const named = new Set<string>();
    for (const chunk of sortedChunks(narKeys)) {
      for (const row of await this.rows<{ nar_key: string }>(this.pool, "namedNarKeys", [chunk])) named.add(row.nar_key);
    }
    return named;
  }

  // as deleteNar, for a list: the stored-bytes row first, then the records
  async deleteNars(keys: string[]): Promise<NarRecord[]> {
    const removed: NarRecord[] = [];
    for (const chunk of sortedChunks(keys)) {
      removed.push(
        ...(await this.write(async (tx) => {
          await this.rows(tx, "lockStoredBytes", []);
          const rows = await this.rows<NarRow>(tx, "narsForUpdate", [chunk]);
          if (rows.length === 0) return [];
          await this.changes(tx, "deleteNars", [rows.map((r) => r.key)]);
          const records = rows.map(narFromRow);
          await this.changes(tx, "addStoredBytes", [-records.reduce((n, r) => n + r.size, 0)]);
          return records;
        })),
      );
    }
    return removed;
  }

  // Chunk writes that change the stored-bytes figure lock its row first, as NAR writes do,
  // then the chunk rows in hash order: every writer locks in the same order.
  async reserveChunks(chunks: ChunkRecord[], at: number): Promise<Map<string, ChunkState>> {
    const byHash = new Map(chunks.map((c) => [c.hash, c]));
    return this.write(async (tx) => {
      await this.rows(tx, "lockStoredBytes", []);
      const states = new Map<string, ChunkState>();
      for (const batch of sortedChunks([...byHash.keys()])) {
        const present = await this.rows<ChunkRow>(tx, "chunksForUpdate", [batch]);
        for (const row of present) states.set(row.hash, chunkStateOf(row));
        const absent = batch.filter((h) => !states.has(h)).map((h) => byHash.get(h)!);
        if (absent.length > 0) {
          await this.changes(tx, "insertChunks", this.chunkInsertParams(absent, at));
          await this.changes(tx, "addStoredBytes", [absent.reduce((n, c) => n + c.size, 0)]);
          for (const c of absent) states.set(c.hash, "unstored");
        }
        await this.changes(tx, "touchChunks", [at, batch]);
      }
      return states;
    });
  }

  async markChunksStored(hashes: string[]): Promise<void> {
    for (const batch of sortedChunks(hashes)) await this.changes(this.pool, "markChunksStored", [batch]);
  }

  async putChunkedNar(rec: NarRecord, chunkHashes: string[], at: number): Promise<boolean> {
    const distinct = sortedChunks(chunkHashes);
    return this.write(async (tx) => {
      await this.rows(tx, "lockStoredBytes", []);
      const [old] = await this.rows<{ size: number }>(tx, "narSizeForUpdate", [rec.key]);
      // the chunks' rows locked and their last use set: a sweep waiting on them then finds
      // them in use; one that doomed them first leaves them unchanged, and this gives up
      for (const batch of distinct) {
        const rows = await this.rows<ChunkRow>(tx, "chunksForUpdate", [batch]);
        if (rows.length !== batch.length || rows.some((r) => r.doomed_at != null)) throw new ChunkGone();
        await this.changes(tx, "touchChunks", [at, batch]);
      }
      await this.changes(tx, "upsertNar", narValues({ ...rec, size: 0, chunked: true }));
      await this.changes(tx, "deleteNarChunks", [rec.key]);
      for (let i = 0; i < chunkHashes.length; i += 1000) {
        const slice = chunkHashes.slice(i, i + 1000);
        await this.changes(tx, "insertNarChunks", this.narChunkParams(rec.key, i, slice));
      }
      if (old && Number(old.size) !== 0) await this.changes(tx, "addStoredBytes", [-Number(old.size)]);
      return true;
    }).catch((err: unknown) => {
      if (err instanceof ChunkGone) return false;
      throw err;
    });
  }

  async getChunk(hash: string): Promise<(ChunkRecord & { state: ChunkState }) | null> {
    const [row] = await this.rows<ChunkRow>(this.pool, "chunk", [hash]);
    return row ? { ...chunkFromRow(row), state: chunkStateOf(row) } : null;
  }

  async narChunks(key: string): Promise<ChunkRecord[]> {
    return (await this.rows<ChunkRow>(this.pool, "narChunks", [key])).map(chunkFromRow);
  }

  async doomUnusedChunks(usedBefore: number, limit: number, at: number): Promise<ChunkRecord[]> {
    const earlier = (await this.rows<ChunkRow>(this.pool, "doomedChunks", [at, limit])).map(chunkFromRow);
    const candidates = (await this.rows<ChunkRow>(this.pool, "unusedChunks", [usedBefore, limit])).map(chunkFromRow);
    if (candidates.length === 0) return earlier;
    const doomed = await this.write(async (tx) => {
      const locked = await this.rows<ChunkRow>(tx, "chunkCandidatesForUpdate", [sortedUnique(candidates.map((c) => c.hash)), usedBefore]);
      if (locked.length === 0) return [];
      const held = new Set((await this.rows<{ chunk_hash: string }>(tx, "heldChunks", [locked.map((r) => r.hash)])).map((r) => r.chunk_hash));
      const unused = locked.filter((r) => !held.has(r.hash));
      if (unused.length > 0) await this.changes(tx, "doomChunks", [at, unused.map((r) => r.hash)]);
      return unused;
    });
    const found = new Set(earlier.map((c) => c.hash));
    return [...earlier, ...doomed.map(chunkFromRow).filter((c) => !found.has(c.hash))];
  }

  async deleteDoomedChunks(hashes: string[]): Promise<number> {
    let deleted = 0;
    for (const batch of sortedChunks(hashes)) {
      deleted += await this.write(async (tx) => {
        await this.rows(tx, "lockStoredBytes", []);
        const rows = await this.rows<ChunkRow>(tx, "doomedChunksForUpdate", [batch]);
        if (rows.length === 0) return 0;
        await this.changes(tx, "deleteChunks", [rows.map((r) => r.hash)]);
        await this.changes(tx, "addStoredBytes", [-rows.reduce((n, r) => n + Number(r.size), 0)]);
        return rows.length;
      });
    }
    return deleted;
  }

  async listChunks(limit: number, after: string = FIRST_KEY): Promise<(ChunkRecord & { state: ChunkState })[]> {
    return (await this.rows<ChunkRow>(this.pool, "listChunks", [after, limit])).map((row) => ({ ...chunkFromRow(row), state: chunkStateOf(row) }));
  }

  /** `insertChunks`' parameters: new chunks, unstored, last used `at`. */
  protected abstract chunkInsertParams(chunks: ChunkRecord[], at: number): ServerParam[];
  /** `insertNarChunks`' parameters: `hashes` at positions from `first` on. */
  protected abstract narChunkParams(key: string, first: number, hashes: string[]): ServerParam[];

  async storedBytes(): Promise<number> {
    const [row] = await this.rows<{ value: number }>(this.pool, "storedBytes", []);
    return row ? Number(row.value) : 0;
  }

  async storedCounts(): Promise<StoredCounts> {
    const [row] = await this.rows<{ narinfos: number | string; nars: number | string }>(this.pool, "storedCounts", []);
    return { narInfos: Number(row?.narinfos ?? 0), nars: Number(row?.nars ?? 0) };
  }

  async recountStoredBytes(): Promise<{ before: number; after: number }> {
    return this.write(async (tx) => {
      const [locked] = await this.rows<{ value: number }>(tx, "lockStoredBytes", []);
      const [sum] = await this.rows<{ total: number | string }>(tx, "sumNarSizes", []);
      const after = Number(sum!.total);
      await this.changes(tx, "setStoredBytes", [after]);
      return { before: locked ? Number(locked.value) : 0, after };
    });
  }

  async narInfosByAge(limit: number, after: { lastAccessedAt: number; hash: string } = FIRST_AGE): Promise<NarInfoAge[]> {
    return (await this.rows<NarInfoAgeRow>(this.pool, "narInfosByAge", this.ageParams(after, limit))).map(narInfoAgeFromRow);
  }

  async referencesOf(hashes: string[]): Promise<Map<string, string[]>> {
    const rows: { hash: string; reference: string }[] = [];
    for (const chunk of sortedChunks(hashes)) rows.push(...(await this.rows<{ hash: string; reference: string }>(this.pool, "referencesOf", [chunk])));
    return referencesByHash(hashes, rows);
  }

  async listNarInfos(limit: number, after: string = FIRST_KEY): Promise<NarInfoListing[]> {
    return (await this.rows<NarInfoListingRow>(this.pool, "listNarInfos", [after, limit])).map(narInfoListingFromRow);
  }

  async listNars(limit: number, after: string = FIRST_KEY): Promise<NarRecord[]> {
    return (await this.rows<NarRow>(this.pool, "listNars", [after, limit])).map(narFromRow);
  }

  async getRealisation(id: string): Promise<RealisationRecord | null> {
    const [row] = await this.rows<RealisationRow>(this.pool, "realisation", [id]);
    return row ? realisationFromRow(row) : null;
  }

  async insertRealisationIfAbsent(rec: RealisationRecord): Promise<boolean> {
    return (await this.changes(this.pool, "insertRealisationIfAbsent", realisationValues(rec))) > 0;
  }

  async addPin(pin: Pin): Promise<boolean> {
    return (await this.changes(this.pool, "addPin", [pin.hash, pin.storePath, pin.createdAt])) > 0;
  }

  async removePin(hash: string): Promise<boolean> {
    return (await this.changes(this.pool, "removePin", [hash])) > 0;
  }

  async listPins(): Promise<Pin[]> {
    return (await this.rows<PinRow>(this.pool, "listPins", [])).map(pinFromRow);
  }

  async touch(hashes: string[], at: number): Promise<void> {
    if (hashes.length === 0) return;
    const sorted = sortedUnique(hashes); // rows locked in one order by every replica
    await this.write(async (tx) => {
      await this.changes(tx, "touchNarInfos", [at, sorted]);
      await this.changes(tx, "touchNarsOfNarInfos", [at, sorted]);
    });
  }

  async getConfig(key: string): Promise<string | null> {
    const [row] = await this.rows<{ value: string }>(this.pool, "config", [key]);
    return row ? row.value : null;
  }

  async setConfig(key: string, value: string): Promise<void> {
    await this.changes(this.pool, "setConfig", [key, value]);
  }

  async setConfigIfAbsent(key: string, value: string): Promise<string> {
    // Two autocommitted statements, not one transaction: the read runs after the insert
    // (ours, or the one ours waited for) committed, so it sees the winner's value.
    await this.changes(this.pool, "insertConfigIfAbsent", [key, value]);
    const [row] = await this.rows<{ value: string }>(this.pool, "config", [key]);
    return row!.value;
  }
}
