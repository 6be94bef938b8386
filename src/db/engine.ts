/** The flow every engine shares, written once: connect and check, migrate under a lock,
 * writes in a fixed row order, set-if-absent. Each engine brings its SQL and its driver's
 * calls; `ServerMetadataStore` is the whole MetadataStore of the two server engines
 * (postgres, mysql), which differ only in those. */
import type { MetadataStore, NarInfoRecord, NarRecord } from "./metadata-store.ts";
import { migrationStatusOf, pendingMigrations, type Migration } from "./migrations.ts";
import { narFromRow, narInfoFromRow, narInfoValues, narValues, sortedUnique, type NarInfoRow, type NarRow } from "./rows.ts";

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
  | "nar"
  | "upsertNar"
  | "deleteNar"
  | "touchNarInfos"
  | "touchNarsOfNarInfos"
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
  protected abstract referencesOf(refs: Refs): string[];
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
    return row ? narInfoFromRow(row, this.referencesOf(row.refs)) : null;
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
    // references go with it (ON DELETE CASCADE)
    return (await this.changes(this.pool, "deleteNarInfo", [hash])) > 0;
  }

  async narInfosForNar(narKey: string): Promise<NarInfoRecord[]> {
    const rows = await this.rows<NarInfoRowWithRefs<Refs>>(this.pool, "narInfosForNar", [narKey]);
    return rows.map((row) => narInfoFromRow(row, this.referencesOf(row.refs)));
  }

  async getNar(key: string): Promise<NarRecord | null> {
    const [row] = await this.rows<NarRow>(this.pool, "nar", [key]);
    return row ? narFromRow(row) : null;
  }

  async putNar(rec: NarRecord): Promise<void> {
    await this.changes(this.pool, "upsertNar", narValues(rec));
  }

  async deleteNar(key: string): Promise<boolean> {
    return (await this.changes(this.pool, "deleteNar", [key])) > 0;
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
