/** MetadataStore on PostgreSQL (the `postgres` driver). Every statement is prepared once per
 * connection; multi-statement writes run in one transaction; migrations run under an advisory
 * lock so replicas starting together migrate the database exactly once. */
import { readFileSync } from "node:fs";
import postgres from "postgres";
import type { ServerUrl } from "./database-url.ts";
import type { ChunkRecord } from "./metadata-store.ts";
import { connectChecked, ServerMetadataStore, type MigrationDriver, type MigrationSession, type ServerParam, type ServerQueries, type ServerQueryName } from "./engine.ts";
import { migrationsFor, type Migration } from "./migrations.ts";
import { DEFAULT_CONNECT_TIMEOUT_SECONDS, NARINFO_AGE_COLUMNS, NARINFO_COLUMNS, poolSizes, REALISATION_COLUMNS, retryAborted, STORED_BYTES, type PoolSettings } from "./rows.ts";

const NARINFO_VALUES = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13";
/** a narinfo row with its references, read in one statement (one snapshot) */
const NARINFO_WITH_REFERENCES = `SELECT n.hash, n.store_path, n.text, n.nar_key, n.upstream, n.upstream_nar_url, n.compression,
      n.file_hash, n.file_size, n.nar_hash, n.nar_size, n.created_at,
      ARRAY(SELECT r.reference FROM narinfo_references r WHERE r.hash = n.hash) AS refs
    FROM narinfos n`;

/** The statements the store runs, by name: exported so tests can check their query plans. */
export const POSTGRES_QUERIES = {
  narInfoText: "SELECT text FROM narinfos WHERE hash = $1",
  narInfo: `${NARINFO_WITH_REFERENCES} WHERE n.hash = $1`,
  narInfosForNar: `${NARINFO_WITH_REFERENCES} WHERE n.nar_key = $1 ORDER BY n.hash`,
  upsertNarInfo: `INSERT INTO narinfos (${NARINFO_COLUMNS}) VALUES (${NARINFO_VALUES})
    ON CONFLICT (hash) DO UPDATE SET store_path = excluded.store_path, text = excluded.text,
      nar_key = excluded.nar_key, upstream = excluded.upstream, upstream_nar_url = excluded.upstream_nar_url,
      compression = excluded.compression, file_hash = excluded.file_hash, file_size = excluded.file_size,
      nar_hash = excluded.nar_hash, nar_size = excluded.nar_size, created_at = excluded.created_at,
      last_accessed_at = GREATEST(narinfos.last_accessed_at, excluded.last_accessed_at)`,
  insertNarInfoIfAbsent: `INSERT INTO narinfos (${NARINFO_COLUMNS}) VALUES (${NARINFO_VALUES})
    ON CONFLICT (hash) DO NOTHING`,
  deleteReferences: "DELETE FROM narinfo_references WHERE hash = $1",
  insertReferences: "INSERT INTO narinfo_references (hash, reference) SELECT $1, unnest($2::text[])",
  deleteNarInfo: "DELETE FROM narinfos WHERE hash = $1",
  // a realisation goes with the narinfo of its output path
  deleteRealisationsOf: "DELETE FROM realisations WHERE out_hash = ANY($1::text[])",
  realisation: `SELECT ${REALISATION_COLUMNS} FROM realisations WHERE id = $1`,
  insertRealisationIfAbsent: `INSERT INTO realisations (${REALISATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING`,
  nar: "SELECT key, size, file_hash, nar_hash, created_at, chunked FROM nars WHERE key = $1",
  upsertNar: `INSERT INTO nars (key, size, file_hash, nar_hash, created_at, last_accessed_at, chunked) VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (key) DO UPDATE SET size = excluded.size, file_hash = excluded.file_hash, chunked = excluded.chunked,
      nar_hash = excluded.nar_hash, created_at = excluded.created_at,
      last_accessed_at = GREATEST(nars.last_accessed_at, excluded.last_accessed_at)`,
  deleteNar: "DELETE FROM nars WHERE key = $1",
  touchNarInfos: "UPDATE narinfos SET last_accessed_at = GREATEST(last_accessed_at, $1) WHERE hash = ANY($2::text[])",
  // the NAR a narinfo names is what LRU eviction frees, so its access time follows
  touchNarsOfNarInfos: `UPDATE nars SET last_accessed_at = GREATEST(nars.last_accessed_at, $1)
    FROM narinfos WHERE narinfos.nar_key = nars.key AND narinfos.hash = ANY($2::text[])`,
  lockStoredBytes: `SELECT value FROM stats WHERE name = '${STORED_BYTES}' FOR UPDATE`,
  narSizeForUpdate: "SELECT size FROM nars WHERE key = $1 FOR UPDATE",
  storedBytes: `SELECT value FROM stats WHERE name = '${STORED_BYTES}'`,
  storedCounts: `SELECT (SELECT COUNT(*) FROM narinfos) AS narinfos, (SELECT COUNT(*) FROM nars) AS nars`,
  addStoredBytes: `UPDATE stats SET value = value + $1 WHERE name = '${STORED_BYTES}'`,
  setStoredBytes: `INSERT INTO stats (name, value) VALUES ('${STORED_BYTES}', $1) ON CONFLICT (name) DO UPDATE SET value = excluded.value`,
  /** fsck only: the one statement that reads every NAR record */
  sumNarSizes: "SELECT (SELECT COALESCE(SUM(size), 0) FROM nars) + (SELECT COALESCE(SUM(size), 0) FROM chunks) AS total",
  deleteNarChunks: "DELETE FROM nar_chunks WHERE nar_key = $1",
  chunk: "SELECT hash, size, nar_bytes, stored, doomed_at FROM chunks WHERE hash = $1",
  chunksForUpdate: "SELECT hash, size, nar_bytes, stored, doomed_at FROM chunks WHERE hash = ANY($1::text[]) ORDER BY hash FOR UPDATE",
  insertChunks: `INSERT INTO chunks (hash, size, nar_bytes, stored, last_used_at)
    SELECT h, s, n, st, u FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::smallint[], $5::bigint[]) AS t(h, s, n, st, u)`,
  touchChunks: "UPDATE chunks SET last_used_at = GREATEST(last_used_at, $1) WHERE hash = ANY($2::text[]) AND doomed_at IS NULL",
  // The rows locked in hash order, as every chunk writer locks them: a bare UPDATE locks in
  // the order it finds rows on disk, and deadlocked against a commit locking in hash order.
  markChunksStored: `UPDATE chunks SET stored = 1 WHERE hash IN
    (SELECT hash FROM chunks WHERE hash = ANY($1::text[]) ORDER BY hash FOR UPDATE)`,
  insertNarChunks: `INSERT INTO nar_chunks (nar_key, position, chunk_hash)
    SELECT k, p, h FROM unnest($1::text[], $2::int[], $3::text[]) AS t(k, p, h)`,
  narChunks: `SELECT c.hash, c.size, c.nar_bytes FROM nar_chunks n JOIN chunks c ON c.hash = n.chunk_hash
    WHERE n.nar_key = $1 ORDER BY n.position`,
  unusedChunks: `SELECT hash, size, nar_bytes FROM chunks c WHERE doomed_at IS NULL AND last_used_at < $1
    AND NOT EXISTS (SELECT 1 FROM nar_chunks n WHERE n.chunk_hash = c.hash) ORDER BY last_used_at, hash LIMIT $2`,
  // the candidates locked first, then (a new snapshot, taken once they are held) those a NAR
  // holds left out: a commit holding them finished before, or finds them doomed after
  chunkCandidatesForUpdate: `SELECT hash, size, nar_bytes FROM chunks
    WHERE hash = ANY($1::text[]) AND doomed_at IS NULL AND last_used_at < $2 ORDER BY hash FOR UPDATE`,
  heldChunks: "SELECT DISTINCT chunk_hash FROM nar_chunks WHERE chunk_hash = ANY($1::text[])",
  doomChunks: "UPDATE chunks SET doomed_at = $1 WHERE hash = ANY($2::text[])",
  doomedChunks: "SELECT hash, size, nar_bytes FROM chunks WHERE doomed_at IS NOT NULL AND doomed_at <= $1 ORDER BY hash LIMIT $2",
  doomedChunksForUpdate: "SELECT hash, size, nar_bytes FROM chunks WHERE hash = ANY($1::text[]) AND doomed_at IS NOT NULL ORDER BY hash FOR UPDATE",
  deleteChunks: "DELETE FROM chunks WHERE hash = ANY($1::text[])",
  listChunks: "SELECT hash, size, nar_bytes, stored, doomed_at FROM chunks WHERE hash > $1 ORDER BY hash LIMIT $2",
  narInfosByAge: `SELECT ${NARINFO_AGE_COLUMNS} FROM narinfos WHERE (last_accessed_at, hash) > ($1, $2)
    ORDER BY last_accessed_at, hash LIMIT $3`,
  deleteNarInfos: "DELETE FROM narinfos WHERE hash = ANY($1::text[])",
  namedNarKeys: "SELECT DISTINCT nar_key FROM narinfos WHERE nar_key = ANY($1::text[])",
  narsForUpdate: "SELECT key, size, file_hash, nar_hash, created_at, chunked FROM nars WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE",
  deleteNars: "DELETE FROM nars WHERE key = ANY($1::text[])",
  referencesOf: "SELECT hash, reference FROM narinfo_references WHERE hash = ANY($1::text[])",
  listNarInfos: "SELECT hash, nar_key, upstream FROM narinfos WHERE hash > $1 ORDER BY hash LIMIT $2",
  listNars: "SELECT key, size, file_hash, nar_hash, created_at, chunked FROM nars WHERE key > $1 ORDER BY key LIMIT $2",
  addPin: "INSERT INTO pins (hash, store_path, created_at) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING",
  removePin: "DELETE FROM pins WHERE hash = $1",
  listPins: "SELECT hash, store_path, created_at FROM pins ORDER BY created_at, hash",
  config: "SELECT value FROM config WHERE key = $1",
  setConfig: "INSERT INTO config (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
  insertConfigIfAbsent: "INSERT INTO config (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
} as const satisfies ServerQueries;

type Sql = postgres.Sql<{}>;
type Tx = postgres.TransactionSql<{}>;

/** Advisory lock id held while migrating ("ncps" in ASCII); advisory locks are per database. */
const MIGRATION_LOCK_ID = 0x6e637073;
/** Idle connections above the open ones the pool may keep close after this long. */
const IDLE_TIMEOUT_SECONDS = 60;

/** Driver options for a postgres URL: address, credentials, TLS per sslmode, pool size,
 * a short connect timeout, BIGINT read as a JS number. */
export function postgresConnectOptions(target: ServerUrl, pool: PoolSettings = {}): postgres.Options<{}> {
  const params = { ...target.params };
  const connectTimeout = takeSeconds(params, "connect_timeout") ?? DEFAULT_CONNECT_TIMEOUT_SECONDS;
  const rootCertPath = params.sslrootcert;
  delete params.sslrootcert;
  const { maxOpen, maxIdle } = poolSizes(pool);
  const address =
    target.address.kind === "tcp"
      ? { host: target.address.host, port: target.address.port }
      : { path: `${target.address.socketPath}/.s.PGSQL.${target.address.port}` };
  return {
    ...address,
    database: target.database,
    ...(target.user === null ? {} : { username: target.user }),
    ...(target.password === null ? {} : { password: target.password }),
    ssl: sslOption(target.sslmode ?? (target.address.kind === "unix" ? "disable" : "prefer"), rootCertPath),
    max: maxOpen,
    // the driver keeps no count of idle connections: fewer idle than open means idle ones close
    ...(maxIdle < maxOpen ? { idle_timeout: IDLE_TIMEOUT_SECONDS } : {}),
    connect_timeout: connectTimeout,
    onnotice: () => {},
    types: { int8: { to: 20, from: [20], serialize: (x: number) => String(x), parse: (x: string) => Number(x) } } as never,
    connection: { application_name: "ncps", ...params },
  };
}

function sslOption(mode: string, rootCertPath: string | undefined): postgres.Options<{}>["ssl"] {
  const ca = rootCertPath === undefined ? {} : { ca: readFileSync(rootCertPath) };
  switch (mode) {
    case "disable":
      return false;
    case "allow":
    case "prefer":
      return "prefer"; // TLS when the server offers it, certificate unchecked (as libpq)
    case "require":
      return rootCertPath === undefined ? "require" : { ...ca, checkServerIdentity: () => undefined };
    case "verify-ca":
      return { ...ca, rejectUnauthorized: true, checkServerIdentity: () => undefined };
    default: // verify-full
      return { ...ca, rejectUnauthorized: true };
  }
}

function takeSeconds(params: Record<string, string>, name: string): number | undefined {
  const raw = params[name];
  delete params[name];
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw) || Number(raw) < 1) throw new Error(`invalid ${name} "${raw.slice(0, 16)}": expected whole seconds, at least 1`);
  return Number(raw);
}

function isAborted(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === "40P01" || code === "40001"; // deadlock_detected, serialization_failure
}

export class PostgresMetadataStore extends ServerMetadataStore<Sql, Tx, string[]> {
  readonly dialect = "postgres" as const;
  protected readonly pool: Sql;
  protected readonly migrations: Migration[];

  private constructor(sql: Sql, migrations: Migration[]) {
    super();
    this.pool = sql;
    this.migrations = migrations;
  }

  /** Connects (checking address and credentials now, not at the first request). Does not
   * migrate: call `migrate()`. */
  static async open(target: ServerUrl, opts: { pool?: PoolSettings; migrations?: Migration[] } = {}): Promise<PostgresMetadataStore> {
    const sql = await connectChecked(
      postgres(postgresConnectOptions(target, opts.pool)) as Sql,
      (sql) => sql`SELECT 1`,
      (sql) => sql.end({ timeout: 1 }),
    );
    return new PostgresMetadataStore(sql, opts.migrations ?? migrationsFor("postgres"));
  }

  private async run(db: Sql | Tx, name: ServerQueryName, params: ServerParam[]): Promise<postgres.RowList<postgres.Row[]>> {
    try {
      return await db.unsafe(POSTGRES_QUERIES[name], params as never[], { prepare: true });
    } catch (err) {
      if ((err as { code?: string }).code === "42P01") {
        throw new Error("the postgres database schema is missing or out of date: run `ncps migrate`");
      }
      throw err;
    }
  }

  protected async rows<T>(db: Sql | Tx, name: ServerQueryName, params: ServerParam[]): Promise<T[]> {
    return (await this.run(db, name, params)) as unknown as T[];
  }

  protected async changes(db: Sql | Tx, name: ServerQueryName, params: ServerParam[]): Promise<number> {
    return (await this.run(db, name, params)).count;
  }

  protected async write<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return retryAborted(isAborted, () => this.pool.begin((tx) => fn(tx)) as Promise<T>);
  }

  protected referenceParams(hash: string, references: string[]): ServerParam[] {
    return [hash, references];
  }

  protected decodeReferences(refs: string[]): string[] {
    return refs;
  }

  protected chunkInsertParams(chunks: ChunkRecord[], at: number): ServerParam[] {
    return [chunks.map((c) => c.hash), chunks.map((c) => c.size), chunks.map((c) => c.narBytes), chunks.map(() => 0), chunks.map(() => at)];
  }

  protected narChunkParams(key: string, first: number, hashes: string[]): ServerParam[] {
    return [hashes.map(() => key), hashes.map((_, i) => first + i), hashes];
  }

  /** All pending migrations in one transaction under an advisory lock (PostgreSQL DDL is
   * transactional). */
  protected migrationDriver(): MigrationDriver {
    return {
      applied: () => appliedMigrations(this.pool),
      locked: <T>(body: (session: MigrationSession) => Promise<T>) =>
        this.pool.begin(async (tx) => {
          await tx.unsafe(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_ID})`);
          await tx.unsafe("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)");
          return body({
            applied: () => appliedMigrations(tx),
            apply: async (migration) => {
              await tx.unsafe(migration.sql);
              await tx.unsafe("INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)", [migration.name, Date.now()]);
              return true;
            },
          });
        }) as Promise<T>,
    };
  }

  async close(): Promise<void> {
    await this.pool.end({ timeout: 5 });
  }
}

async function appliedMigrations(db: Sql | Tx): Promise<Set<string>> {
  const [table] = await db.unsafe("SELECT to_regclass('schema_migrations') IS NOT NULL AS present");
  if (!table?.present) return new Set();
  const rows = await db.unsafe("SELECT name FROM schema_migrations");
  return new Set(rows.map((r) => r.name as string));
}
