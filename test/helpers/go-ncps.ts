/** A Go ncps deployment, as the Go ncps of a given version leaves it: its database built by
 * that version's own migration SQL (vendored as data under test/fixtures/go-ncps/<version>/,
 * see its NOTE.md) and its rows and storage objects written the way that version's code writes
 * them (kalbasit/ncps pkg/cache storeInDatabase, pkg/storage/local and s3). For the tests of
 * `ncps import-go`. */
import { Database } from "bun:sqlite";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import mysql from "mysql2/promise";
import postgres from "postgres";
import { parseDatabaseUrl, type ServerUrl } from "../../src/db/database-url.ts";
import { mysqlConnectOptions } from "../../src/db/mysql.ts";
import { postgresConnectOptions } from "../../src/db/postgres.ts";
import { goChunkKey, goNarInfoKey, goNarKey, GO_SECRET_KEY_KEY } from "../../src/goimport/go-storage.ts";
import { parseNarInfo, serializeNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { formatSecretKey, type SecretKey } from "../../src/nix/signature.ts";

const FIXTURES = new URL("../fixtures/go-ncps/", import.meta.url).pathname;

/** The Go versions whose schemas the fixtures hold (tags, or the commit of the newest):
 * v0.5.0 the first schema (narinfo texts and key in storage, SQLite only), v0.7.0 nar_files
 * and the config table (texts still in storage), v0.9.4 narinfo fields in the database and
 * CDC columns, 816f6378 (2026-08) the ent baseline and upstream_url. */
export type GoVersion = "v0.5.0" | "v0.7.0" | "v0.9.4" | "816f6378";
export const GO_VERSIONS: GoVersion[] = ["v0.5.0", "v0.7.0", "v0.9.4", "816f6378"];

export type GoDialect = "sqlite" | "postgres" | "mysql";

/** Go versions that keep narinfo fields in the database (v0.8 on). */
const holdsFields = (v: GoVersion) => v === "v0.9.4" || v === "816f6378";
/** Go versions that keep the secret key in the database (v0.6 on). */
const keyInDatabase = (v: GoVersion) => v !== "v0.5.0";

/** The "Up" half of a goose (`-- +goose Up`) or dbmate (`-- migrate:up`) migration file. */
function upSection(sql: string): string {
  const up = sql.search(/^-- (\+goose Up|migrate:up)\s*$/m);
  const down = sql.search(/^-- (\+goose Down|migrate:down)\s*$/m);
  return sql.slice(up < 0 ? 0 : up, down < 0 ? undefined : down).replace(/^-- \+goose (StatementBegin|StatementEnd|NO TRANSACTION)\s*$/gm, "");
}

export async function migrationFiles(version: GoVersion, dialect: GoDialect): Promise<{ version: string; sql: string }[]> {
  const dir = join(FIXTURES, version, dialect);
  const names = (await readdir(dir)).filter((n) => n.endsWith(".sql")).sort();
  if (names.length === 0) throw new Error(`no ${dialect} migrations for Go ${version}`);
  return Promise.all(names.map(async (n) => ({ version: n.split("_")[0]!, sql: upSection(await Bun.file(join(dir, n)).text()) })));
}

/** The migration tool's own table, as it leaves it: dbmate's `schema_migrations(version)`
 * up to v0.9, goose's (id, version_id, is_applied, tstamp) after (pkg/database/migrate). */
async function recordMigrations(sql: Sql, version: GoVersion, dialect: GoDialect, versions: string[]): Promise<void> {
  if (version !== "816f6378") {
    await sql.script("CREATE TABLE schema_migrations (version varchar(128) NOT NULL PRIMARY KEY)");
    for (const v of versions) await sql.run("INSERT INTO schema_migrations (version) VALUES (?)", [v]);
    return;
  }
  const gooseTable = {
    sqlite: "CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, version_id INTEGER NOT NULL, is_applied INTEGER NOT NULL, tstamp TIMESTAMP DEFAULT (datetime('now')))",
    postgres: "CREATE TABLE schema_migrations (id serial NOT NULL, version_id bigint NOT NULL, is_applied boolean NOT NULL, tstamp timestamp NULL DEFAULT now(), PRIMARY KEY (id))",
    mysql: "CREATE TABLE schema_migrations (id serial NOT NULL, version_id bigint NOT NULL, is_applied boolean NOT NULL, tstamp timestamp NULL DEFAULT now(), PRIMARY KEY (id))",
  };
  await sql.script(gooseTable[dialect]);
  for (const v of ["0", ...versions]) await sql.run("INSERT INTO schema_migrations (version_id, is_applied) VALUES (?, ?)", [Number(v), dialect === "postgres" ? true : 1]);
}

/** Parameterised statements on the Go database, `?` placeholders on both engines. */
interface Sql {
  run(sql: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  /** an INSERT; the id of the row it made */
  insert(sql: string, params: unknown[]): Promise<number>;
  /** `key` is a reserved word in MySQL */
  quote(identifier: string): string;
  /** several statements (a migration file), outside a transaction as goose runs them */
  script(sql: string): Promise<void>;
  close(): Promise<void>;
}

async function connect(dialect: GoDialect, url: string): Promise<Sql> {
  if (dialect === "sqlite") {
    const target = parseDatabaseUrl(url);
    if (target.dialect !== "sqlite") throw new Error("not a sqlite URL");
    await mkdir(dirname(target.path), { recursive: true });
    const db = new Database(target.path, { create: true, strict: true });
    db.exec("PRAGMA journal_mode = WAL"); // as the Go ncps opens it
    return {
      run: async (sql, params = []) => db.prepare(sql).all(...(params as never[])) as Record<string, unknown>[],
      insert: async (sql, params) => Number((db.prepare(`${sql} RETURNING id`).get(...(params as never[])) as { id: number }).id),
      quote: (identifier) => `"${identifier}"`,
      script: async (sql) => {
        db.exec(sql);
      },
      close: async () => db.close(),
    };
  }
  if (dialect === "mysql") {
    const conn = await mysql.createConnection({ ...mysqlConnectOptions(parseDatabaseUrl(url) as ServerUrl), multipleStatements: true });
    return {
      run: async (sql, params = []) => (await conn.query(sql, params))[0] as Record<string, unknown>[],
      insert: async (sql, params) => ((await conn.query(sql, params))[0] as mysql.ResultSetHeader).insertId,
      quote: (identifier) => `\`${identifier}\``,
      script: async (sql) => {
        await conn.query(sql);
      },
      close: () => conn.end(),
    };
  }
  const pg = postgres({ ...postgresConnectOptions(parseDatabaseUrl(url) as ServerUrl), max: 1 });
  const run: Sql["run"] = async (sql, params = []) => {
    let n = 0;
    const text = params.length === 0 ? sql : sql.replace(/\?/g, () => `$${++n}`);
    return (await pg.unsafe(text, params as never[])) as unknown as Record<string, unknown>[];
  };
  return {
    run,
    insert: async (sql, params) => Number((await run(`${sql} RETURNING id`, params))[0]!.id),
    quote: (identifier) => `"${identifier}"`,
    script: async (sql) => {
      await pg.unsafe(sql);
    },
    close: () => pg.end({ timeout: 5 }),
  };
}

export interface GoDeployment {
  version: GoVersion;
  dialect: GoDialect;
  databaseUrl: string;
  storageDir: string;
  /** A narinfo and its NAR file as that Go version stores them (`file`: the bytes at the
   * narinfo's URL). `textInStorage`: a v0.8+ row not yet migrated (fields NULL, text in
   * storage), as `ncps migrate-narinfo` would still find. `omitNar`: the NAR is lost.
   * `chunked`: the NAR (uncompressed, given) is held as CDC chunks only, as Go v0.9+ with CDC
   * keeps it; `chunksLost` drops the last chunk's link. */
  add(narinfo: NarInfo, file: Uint8Array, opts?: { textInStorage?: boolean; omitNar?: boolean; chunked?: Uint8Array; chunksLost?: boolean }): Promise<void>;
  /** `ncps pin` in the Go ncps (its main branch: pinned_closures). */
  pin(hash: string): Promise<void>;
  /** Flags naming this deployment for `ncps import-go`. */
  flags(): string[];
  close(): Promise<void>;
}

/** Applies the version's migrations to the (empty) database at `databaseUrl` and returns a
 * writer for its rows and its local storage directory. The secret key goes where that version
 * keeps it. */
export async function createGoDeployment(opts: {
  version: GoVersion;
  dialect: GoDialect;
  databaseUrl: string;
  storageDir: string;
  secretKey: SecretKey;
}): Promise<GoDeployment> {
  const { version, dialect, storageDir } = opts;
  const sql = await connect(dialect, opts.databaseUrl);
  const migrations = await migrationFiles(version, dialect);
  for (const migration of migrations.map((m) => m.sql)) await sql.script(migration);
  await recordMigrations(sql, version, dialect, migrations.map((m) => m.version));
  await mkdir(join(storageDir, "store", "nar"), { recursive: true });
  const put = async (key: string, bytes: Uint8Array | string) => {
    await mkdir(dirname(join(storageDir, key)), { recursive: true });
    await writeFile(join(storageDir, key), bytes);
  };
  if (keyInDatabase(version)) await sql.run(`INSERT INTO config (${sql.quote("key")}, value) VALUES (?, ?)`, ["secret_key", formatSecretKey(opts.secretKey)]);
  else await put(GO_SECRET_KEY_KEY, formatSecretKey(opts.secretKey));
  const returningId = (statement: string, params: unknown[]) => sql.insert(statement, params);

  return {
    version,
    dialect,
    databaseUrl: opts.databaseUrl,
    storageDir,
    async add(narinfo, file, addOpts = {}) {
      const hash = narinfo.storePath.slice("/nix/store/".length, "/nix/store/".length + 32);
      const fields = holdsFields(version) && !addOpts.textInStorage;
      const narinfoId = fields
        ? await returningId(
            "INSERT INTO narinfos (hash, store_path, url, compression, file_hash, file_size, nar_hash, nar_size, deriver, system, ca) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [hash, narinfo.storePath, narinfo.url, narinfo.compression ?? null, narinfo.fileHash ?? null, narinfo.fileSize ?? null, narinfo.narHash, narinfo.narSize, narinfo.deriver ?? null, narinfo.system ?? null, narinfo.ca ?? null],
          )
        : await returningId("INSERT INTO narinfos (hash) VALUES (?)", [hash]);
      if (fields) {
        for (const reference of narinfo.references ?? []) await sql.run("INSERT INTO narinfo_references (narinfo_id, reference) VALUES (?, ?)", [narinfoId, reference]);
        for (const sig of narinfo.sigs) await sql.run("INSERT INTO narinfo_signatures (narinfo_id, signature) VALUES (?, ?)", [narinfoId, sig]);
      } else {
        await put(goNarInfoKey(hash), serializeNarInfo(narinfo));
      }
      // the NAR's row: Go's nar_files.hash is the URL's file name hash, compression its type
      const narKey = goNarKey(narinfo.url, narinfo.narHash);
      const narHash = narKey.slice(narKey.lastIndexOf("/") + 1).split(".nar")[0]!;
      const compression = narinfo.compression ?? "";
      if (version === "v0.5.0") {
        await sql.run("INSERT INTO nars (narinfo_id, hash, compression, file_size) VALUES (?, ?, ?, ?)", [narinfoId, narHash, compression, file.length]);
      } else {
        const chunks = addOpts.chunked ? splitInThree(addOpts.chunked) : [];
        const narFileId = await returningId(
          `INSERT INTO nar_files (hash, compression, file_size, query${chunks.length > 0 ? ", total_chunks" : ""}) VALUES (?, ?, ?, ?${chunks.length > 0 ? ", ?" : ""})`,
          [narHash, compression, file.length, "", ...(chunks.length > 0 ? [chunks.length] : [])],
        );
        await sql.run("INSERT INTO narinfo_nar_files (narinfo_id, nar_file_id) VALUES (?, ?)", [narinfoId, narFileId]);
        const linked = addOpts.chunksLost ? chunks.slice(0, -1) : chunks;
        for (const [index, chunk] of linked.entries()) {
          // the Go ncps names a chunk by the hex BLAKE3 of its bytes; import-go never checks
          // chunk names (the NarHash covers the whole), so a SHA-256 stands in for it here
          const hash = new Bun.CryptoHasher("sha256").update(chunk).digest("hex");
          const stored = Bun.zstdCompressSync(chunk);
          const chunkId = await returningId("INSERT INTO chunks (hash, size, compressed_size) VALUES (?, ?, ?)", [hash, chunk.length, stored.length]);
          await sql.run("INSERT INTO nar_file_chunks (nar_file_id, chunk_id, chunk_index) VALUES (?, ?, ?)", [narFileId, chunkId, index]);
          await put(goChunkKey(hash), stored);
        }
      }
      if (!addOpts.omitNar && !addOpts.chunked) await put(narKey, file);
    },
    async pin(hash) {
      await sql.run("INSERT INTO pinned_closures (hash) VALUES (?)", [hash]);
    },
    flags: () => ["--from-cache-database-url", opts.databaseUrl, "--from-cache-storage-local", storageDir],
    close: () => sql.close(),
  };
}

/** Three chunks of unequal sizes (CDC cuts where the content says, not at fixed sizes). */
function splitInThree(nar: Uint8Array): Uint8Array[] {
  const a = Math.floor(nar.length / 5);
  const b = Math.floor((nar.length * 3) / 5);
  return [nar.subarray(0, a), nar.subarray(a, b), nar.subarray(b)];
}

/** A narinfo text as a test fixture holds it, parsed. */
export const narInfoOf = (text: string): NarInfo => parseNarInfo(text);
