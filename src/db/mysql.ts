/** MetadataStore on MySQL and MariaDB (`mysql2`). Fixed statements run as server-side
 * prepared statements (`execute`, cached per connection); multi-statement writes run in one
 * transaction, retried when InnoDB breaks a deadlock; migrations run under GET_LOCK so
 * replicas starting together migrate the database exactly once. */
import { createHash } from "node:crypto";
import mysql from "mysql2/promise";
import type { ServerUrl } from "./database-url.ts";
import type { ChunkRecord } from "./metadata-store.ts";
import { connectChecked, ServerMetadataStore, type MigrationDriver, type ServerParam, type ServerQueries, type ServerQueryName } from "./engine.ts";
import { migrationsFor, type Migration } from "./migrations.ts";
import { DEFAULT_CONNECT_TIMEOUT_SECONDS, NARINFO_AGE_COLUMNS, NARINFO_COLUMNS, poolSizes, REALISATION_COLUMNS, retryAborted, STORED_BYTES, type PoolSettings } from "./rows.ts";

const NARINFO_VALUES = "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?";
/** a narinfo row with its references, read in one statement (one snapshot); JSON_ARRAYAGG
 * exists in MySQL 5.7.22+ and MariaDB 10.5+ (no ORDER BY in MySQL's: records sort them) */
const NARINFO_WITH_REFERENCES = `SELECT n.hash, n.store_path, n.text, n.nar_key, n.upstream, n.upstream_nar_url, n.compression,
      n.file_hash, n.file_size, n.nar_hash, n.nar_size, n.created_at,
      (SELECT JSON_ARRAYAGG(r.reference) FROM narinfo_references r WHERE r.hash = n.hash) AS refs
    FROM narinfos n`;

/** The statements the store runs, by name: exported so tests can check their query plans.
 * `key` is a reserved word in MySQL, hence the backquotes. */
export const MYSQL_QUERIES = {
  narInfoText: "SELECT text FROM narinfos WHERE hash = ?",
  narInfo: `${NARINFO_WITH_REFERENCES} WHERE n.hash = ?`,
  narInfosForNar: `${NARINFO_WITH_REFERENCES} WHERE n.nar_key = ? ORDER BY n.hash`,
  upsertNarInfo: `INSERT INTO narinfos (${NARINFO_COLUMNS}) VALUES (${NARINFO_VALUES})
    ON DUPLICATE KEY UPDATE store_path = VALUES(store_path), text = VALUES(text),
      nar_key = VALUES(nar_key), upstream = VALUES(upstream), upstream_nar_url = VALUES(upstream_nar_url),
      compression = VALUES(compression), file_hash = VALUES(file_hash), file_size = VALUES(file_size),
      nar_hash = VALUES(nar_hash), nar_size = VALUES(nar_size), created_at = VALUES(created_at),
      last_accessed_at = GREATEST(last_accessed_at, VALUES(last_accessed_at))`,
  // not INSERT IGNORE, which would also turn real errors (a too long value) into warnings;
  // without CLIENT_FOUND_ROWS the no-op update reports 0 affected rows
  insertNarInfoIfAbsent: `INSERT INTO narinfos (${NARINFO_COLUMNS}) VALUES (${NARINFO_VALUES})
    ON DUPLICATE KEY UPDATE hash = hash`,
  deleteReferences: "DELETE FROM narinfo_references WHERE hash = ?",
  /** `query`, not `execute`: the `?` takes a list of [hash, reference] rows */
  insertReferences: "INSERT INTO narinfo_references (hash, reference) VALUES ?",
  deleteNarInfo: "DELETE FROM narinfos WHERE hash = ?",
  /** `query`: the `?` takes the list of hashes. A realisation goes with the narinfo of its
   * output path. */
  deleteRealisationsOf: "DELETE FROM realisations WHERE out_hash IN (?)",
  realisation: `SELECT ${REALISATION_COLUMNS} FROM realisations WHERE id = ?`,
  insertRealisationIfAbsent: `INSERT INTO realisations (${REALISATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE id = id`,
  nar: "SELECT `key`, size, file_hash, nar_hash, created_at, chunked FROM nars WHERE `key` = ?",
  upsertNar: `INSERT INTO nars (\`key\`, size, file_hash, nar_hash, created_at, last_accessed_at, chunked) VALUES (?, ?, ?, ?, ?, ?, ?)
    ON DUPLICATE KEY UPDATE size = VALUES(size), file_hash = VALUES(file_hash), chunked = VALUES(chunked),
      nar_hash = VALUES(nar_hash), created_at = VALUES(created_at),
      last_accessed_at = GREATEST(last_accessed_at, VALUES(last_accessed_at))`,
  deleteNar: "DELETE FROM nars WHERE `key` = ?",
  /** `query`: the second `?` takes the list of hashes */
  touchNarInfos: "UPDATE narinfos SET last_accessed_at = GREATEST(last_accessed_at, ?) WHERE hash IN (?)",
  // the NAR a narinfo names is what LRU eviction frees, so its access time follows (a join:
  // an IN (subquery) in an UPDATE may scan nars)
  touchNarsOfNarInfos: `UPDATE nars JOIN narinfos ON narinfos.nar_key = nars.\`key\`
    SET nars.last_accessed_at = GREATEST(nars.last_accessed_at, ?) WHERE narinfos.hash IN (?)`,
  lockStoredBytes: `SELECT value FROM stats WHERE name = '${STORED_BYTES}' FOR UPDATE`,
  // a locking read: it sees the latest committed row, not the transaction's snapshot
  narSizeForUpdate: "SELECT size FROM nars WHERE `key` = ? FOR UPDATE",
  storedBytes: `SELECT value FROM stats WHERE name = '${STORED_BYTES}'`,
  storedCounts: `SELECT (SELECT COUNT(*) FROM narinfos) AS narinfos, (SELECT COUNT(*) FROM nars) AS nars`,
  addStoredBytes: `UPDATE stats SET value = value + ? WHERE name = '${STORED_BYTES}'`,
  setStoredBytes: `INSERT INTO stats (name, value) VALUES ('${STORED_BYTES}', ?) ON DUPLICATE KEY UPDATE value = VALUES(value)`,
  /** fsck only: the one statement that reads every NAR record */
  sumNarSizes: "SELECT (SELECT COALESCE(SUM(size), 0) FROM nars) + (SELECT COALESCE(SUM(size), 0) FROM chunks) AS total",
  deleteNarChunks: "DELETE FROM nar_chunks WHERE nar_key = ?",
  chunk: "SELECT hash, size, nar_bytes, stored, doomed_at FROM chunks WHERE hash = ?",
  /** `query`: the `?` takes the list of hashes */
  chunksForUpdate: "SELECT hash, size, nar_bytes, stored, doomed_at FROM chunks WHERE hash IN (?) ORDER BY hash FOR UPDATE",
  /** `query`: the `?` takes a list of [hash, size, nar_bytes, stored, last_used_at] rows */
  insertChunks: "INSERT INTO chunks (hash, size, nar_bytes, stored, last_used_at) VALUES ?",
  /** `query`: the second `?` takes the list of hashes */
  touchChunks: "UPDATE chunks SET last_used_at = GREATEST(last_used_at, ?) WHERE hash IN (?) AND doomed_at IS NULL",
  markChunksStored: "UPDATE chunks SET stored = 1 WHERE hash IN (?)",
  /** `query`: the `?` takes a list of [nar_key, position, chunk_hash] rows */
  insertNarChunks: "INSERT INTO nar_chunks (nar_key, position, chunk_hash) VALUES ?",
  narChunks: `SELECT c.hash, c.size, c.nar_bytes FROM nar_chunks n JOIN chunks c ON c.hash = n.chunk_hash
    WHERE n.nar_key = ? ORDER BY n.position`,
  unusedChunks: `SELECT hash, size, nar_bytes FROM chunks c WHERE doomed_at IS NULL AND last_used_at < ?
    AND NOT EXISTS (SELECT 1 FROM nar_chunks n WHERE n.chunk_hash = c.hash) ORDER BY last_used_at, hash LIMIT ?`,
  // the candidates locked first, then (a new snapshot, taken once they are held) those a NAR
  // holds left out: a commit holding them finished before, or finds them doomed after
  chunkCandidatesForUpdate: `SELECT hash, size, nar_bytes FROM chunks
    WHERE hash IN (?) AND doomed_at IS NULL AND last_used_at < ? ORDER BY hash FOR UPDATE`,
  heldChunks: "SELECT DISTINCT chunk_hash FROM nar_chunks WHERE chunk_hash IN (?)",
  doomChunks: "UPDATE chunks SET doomed_at = ? WHERE hash IN (?)",
  doomedChunks: "SELECT hash, size, nar_bytes FROM chunks WHERE doomed_at IS NOT NULL AND doomed_at <= ? ORDER BY hash LIMIT ?",
  doomedChunksForUpdate: "SELECT hash, size, nar_bytes FROM chunks WHERE hash IN (?) AND doomed_at IS NOT NULL ORDER BY hash FOR UPDATE",
  deleteChunks: "DELETE FROM chunks WHERE hash IN (?)",
  listChunks: "SELECT hash, size, nar_bytes, stored, doomed_at FROM chunks WHERE hash > ? ORDER BY hash LIMIT ?",
  /** `query` (LIMIT takes no prepared parameter everywhere); the time comes twice (the range
   * on the index, then the tie-break on hash, which the index holds as its primary key part) */
  narInfosByAge: `SELECT ${NARINFO_AGE_COLUMNS} FROM narinfos
    WHERE last_accessed_at >= ? AND (last_accessed_at > ? OR hash > ?)
    ORDER BY last_accessed_at, hash LIMIT ?`,
  /** `query`, as the four after it: the `?` takes a list */
  deleteNarInfos: "DELETE FROM narinfos WHERE hash IN (?)",
  namedNarKeys: "SELECT DISTINCT nar_key FROM narinfos WHERE nar_key IN (?)",
  narsForUpdate: "SELECT `key`, size, file_hash, nar_hash, created_at, chunked FROM nars WHERE `key` IN (?) ORDER BY `key` FOR UPDATE",
  deleteNars: "DELETE FROM nars WHERE `key` IN (?)",
  referencesOf: "SELECT hash, reference FROM narinfo_references WHERE hash IN (?)",
  /** `query`, for the LIMIT */
  listNarInfos: "SELECT hash, nar_key, upstream FROM narinfos WHERE hash > ? ORDER BY hash LIMIT ?",
  /** `query`, for the LIMIT */
  listNars: "SELECT `key`, size, file_hash, nar_hash, created_at, chunked FROM nars WHERE `key` > ? ORDER BY `key` LIMIT ?",
  addPin: "INSERT INTO pins (hash, store_path, created_at) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE hash = hash",
  removePin: "DELETE FROM pins WHERE hash = ?",
  listPins: "SELECT hash, store_path, created_at FROM pins ORDER BY created_at, hash",
  config: "SELECT value FROM config WHERE `key` = ?",
  setConfig: "INSERT INTO config (`key`, value) VALUES (?, ?) ON DUPLICATE KEY UPDATE value = VALUES(value)",
  insertConfigIfAbsent: "INSERT INTO config (`key`, value) VALUES (?, ?) ON DUPLICATE KEY UPDATE `key` = `key`",
} as const satisfies ServerQueries;

/** Statements run with `query` (parameters expanded client-side): a `?` takes a list, or a
 * LIMIT, which prepared statements take as a number on some servers only. */
const CLIENT_SIDE = new Set<ServerQueryName>([
  "insertReferences",
  "deleteRealisationsOf",
  "chunksForUpdate",
  "insertChunks",
  "touchChunks",
  "markChunksStored",
  "insertNarChunks",
  "doomChunks",
  "chunkCandidatesForUpdate",
  "heldChunks",
  "doomedChunksForUpdate",
  "deleteChunks",
  "touchNarInfos",
  "touchNarsOfNarInfos",
  "narInfosByAge",
  "referencesOf",
  "deleteNarInfos",
  "namedNarKeys",
  "narsForUpdate",
  "deleteNars",
  "listNarInfos",
  "listNars",
]);

type Db = mysql.Pool | mysql.PoolConnection | mysql.Connection;
/** JSON_ARRAYAGG comes back parsed (MySQL's JSON type) or as text (MariaDB), NULL for none. */
type Refs = string[] | string | null;

/** Seconds to wait for another replica to finish migrating. */
const MIGRATION_LOCK_WAIT_SECONDS = 600;
/** Idle connections above max-idle close after this long. */
const IDLE_TIMEOUT_MS = 60_000;

/** Driver options for a mysql URL: address, credentials, TLS (`tls=true|skip-verify`), a
 * short connect timeout. Other query parameters (Go driver options) are ignored. */
export function mysqlConnectOptions(target: ServerUrl): mysql.ConnectionOptions {
  const address =
    target.address.kind === "tcp" ? { host: target.address.host, port: target.address.port } : { socketPath: target.address.socketPath };
  const timeout = target.params.connect_timeout;
  if (timeout !== undefined && (!/^\d+$/.test(timeout) || Number(timeout) < 1)) {
    throw new Error(`invalid connect_timeout "${timeout.slice(0, 16)}": expected whole seconds, at least 1`);
  }
  return {
    ...address,
    database: target.database,
    ...(target.user === null ? {} : { user: target.user }),
    ...(target.password === null ? {} : { password: target.password }),
    ...tlsOption(target.params.tls),
    connectTimeout: (timeout === undefined ? DEFAULT_CONNECT_TIMEOUT_SECONDS : Number(timeout)) * 1000,
    charset: "utf8mb4",
    // affected rows count changed rows only: insertNarInfoIfAbsent reads it
    flags: ["-FOUND_ROWS"],
  };
}

function poolOptions(pool: PoolSettings): mysql.PoolOptions {
  const { maxOpen, maxIdle } = poolSizes(pool);
  return { connectionLimit: maxOpen, maxIdle, idleTimeout: IDLE_TIMEOUT_MS, waitForConnections: true };
}

function tlsOption(tls: string | undefined): Pick<mysql.PoolOptions, "ssl"> {
  switch (tls) {
    case undefined:
    case "false":
      return {};
    case "true":
      return { ssl: {} };
    case "skip-verify":
      return { ssl: { rejectUnauthorized: false } };
    default:
      throw new Error(`invalid tls "${tls.slice(0, 16)}": expected true, skip-verify or false`);
  }
}

function isAborted(err: unknown): boolean {
  return (err as { errno?: number }).errno === 1213; // ER_LOCK_DEADLOCK: the transaction was rolled back
}

export class MysqlMetadataStore extends ServerMetadataStore<mysql.Pool, mysql.PoolConnection, Refs> {
  readonly dialect = "mysql" as const;
  protected readonly pool: mysql.Pool;
  private readonly options: mysql.ConnectionOptions;
  protected readonly migrations: Migration[];

  private constructor(pool: mysql.Pool, options: mysql.ConnectionOptions, migrations: Migration[]) {
    super();
    this.pool = pool;
    this.options = options;
    this.migrations = migrations;
  }

  /** Connects (checking address and credentials now, not at the first request). Does not
   * migrate: call `migrate()`. */
  static async open(target: ServerUrl, opts: { pool?: PoolSettings; migrations?: Migration[] } = {}): Promise<MysqlMetadataStore> {
    const options = mysqlConnectOptions(target);
    const pool = await connectChecked(
      mysql.createPool({ ...options, ...poolOptions(opts.pool ?? {}) }),
      (pool) => pool.query("SELECT 1"),
      (pool) => pool.end(),
    );
    return new MysqlMetadataStore(pool, options, opts.migrations ?? migrationsFor("mysql"));
  }

  private async run(db: Db, name: ServerQueryName, params: ServerParam[]): Promise<unknown> {
    try {
      const [result] = CLIENT_SIDE.has(name) ? await db.query(MYSQL_QUERIES[name], params) : await db.execute(MYSQL_QUERIES[name], params as never);
      return result;
    } catch (err) {
      if ((err as { errno?: number }).errno === 1146) {
        throw new Error("the mysql database schema is missing or out of date: run `ncps migrate`");
      }
      throw err;
    }
  }

  protected async rows<T>(db: Db, name: ServerQueryName, params: ServerParam[]): Promise<T[]> {
    return (await this.run(db, name, params)) as T[];
  }

  protected async changes(db: Db, name: ServerQueryName, params: ServerParam[]): Promise<number> {
    return ((await this.run(db, name, params)) as mysql.ResultSetHeader).affectedRows;
  }

  protected async write<T>(fn: (conn: mysql.PoolConnection) => Promise<T>): Promise<T> {
    return retryAborted(isAborted, async () => {
      const conn = await this.pool.getConnection();
      try {
        await conn.beginTransaction();
        try {
          const result = await fn(conn);
          await conn.commit();
          return result;
        } catch (err) {
          await conn.rollback().catch(() => {});
          throw err;
        }
      } finally {
        conn.release();
      }
    });
  }

  protected override ageParams(after: { lastAccessedAt: number; hash: string }, limit: number): ServerParam[] {
    return [after.lastAccessedAt, after.lastAccessedAt, after.hash, limit];
  }

  protected referenceParams(hash: string, references: string[]): ServerParam[] {
    return [references.map((ref) => [hash, ref])];
  }

  protected chunkInsertParams(chunks: ChunkRecord[], at: number): ServerParam[] {
    return [chunks.map((c) => [c.hash, c.size, c.narBytes, 0, at])];
  }

  protected narChunkParams(key: string, first: number, hashes: string[]): ServerParam[] {
    return [hashes.map((h, i) => [key, first + i, h])];
  }

  protected decodeReferences(refs: Refs): string[] {
    if (refs === null) return [];
    return typeof refs === "string" ? (JSON.parse(refs) as string[]) : refs;
  }

  /** MySQL DDL commits implicitly, so a transaction cannot hold the migration together: a
   * named lock (server-wide, hence named after the database) and a dedicated connection
   * that may send a whole migration file at once. */
  protected migrationDriver(): MigrationDriver {
    return {
      applied: () => appliedMigrations(this.pool),
      locked: async (body) => {
        const conn = await mysql.createConnection({ ...this.options, multipleStatements: true });
        try {
          const [[database]] = (await conn.query("SELECT DATABASE() AS name")) as unknown as [[{ name: string }]];
          const lockName = `ncps-migrate-${createHash("sha1").update(database.name).digest("hex")}`;
          const [[lock]] = (await conn.query("SELECT GET_LOCK(?, ?) AS got", [lockName, MIGRATION_LOCK_WAIT_SECONDS])) as unknown as [[{ got: number | null }]];
          if (lock.got !== 1) throw new Error(`another ncps has been migrating this database for over ${MIGRATION_LOCK_WAIT_SECONDS}s`);
          try {
            await conn.query(
              "CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR(255) NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
            );
            return await body({
              applied: () => appliedMigrations(conn),
              apply: async (migration) => {
                await conn.query(migration.sql);
                await conn.query("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", [migration.name, Date.now()]);
                return true;
              },
            });
          } finally {
            await conn.query("SELECT RELEASE_LOCK(?)", [lockName]).catch(() => {});
          }
        } finally {
          await conn.end().catch(() => {});
        }
      },
    };
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

async function appliedMigrations(db: Db): Promise<Set<string>> {
  const [tables] = (await db.query(
    "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'schema_migrations'",
  )) as unknown as [unknown[]];
  if (tables.length === 0) return new Set();
  const [rows] = (await db.query("SELECT name FROM schema_migrations")) as unknown as [{ name: string }[]];
  return new Set(rows.map((r) => r.name));
}
