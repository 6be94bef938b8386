/** Reading a Go ncps database (SQLite, PostgreSQL or MySQL), read-only, whatever Go version
 * wrote it. The Go schema changed over its versions (kalbasit/ncps migrations):
 *
 * - up to v0.5: `narinfos(id, hash, ...)` and `nars(narinfo_id, hash, compression, ...)`; the
 *   narinfo text lives in storage, the secret key in storage (`config/cache.key`).
 * - v0.6, v0.7: `nar_files` linked through `narinfo_nar_files`, a `config` table holding the
 *   secret key (`secret_key`); narinfo texts still in storage.
 * - v0.8 on: the narinfo's fields in `narinfos` (store_path, url, ...), with
 *   `narinfo_references` and `narinfo_signatures`; a row whose `url` is NULL was not migrated
 *   yet and its text is still in storage. v0.9 adds CDC chunks (`nar_files.total_chunks`).
 *
 * So what this reads is decided by the columns present, not by a version number. */
import { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { errnoReason } from "../errors.ts";
import { DatabaseUrlError, parseDatabaseUrl, type ServerUrl } from "./database-url.ts";

/** One Go narinfo row: its fields when the database holds them, else null (the text is in
 * storage). */
export interface GoNarInfoRow {
  id: number;
  hash: string;
  fields: GoNarInfoFields | null;
}

/** The narinfo fields as the Go ncps stored them (v0.8 on). */
export interface GoNarInfoFields {
  storePath: string | null;
  url: string;
  compression: string | null;
  fileHash: string | null;
  fileSize: number | null;
  narHash: string | null;
  narSize: number | null;
  deriver: string | null;
  system: string | null;
  ca: string | null;
  references: string[];
  signatures: string[];
}

/** The Go config key of the narinfo signing key (pkg/config: KeySecretKey). */
const GO_SECRET_KEY = "secret_key";

type Row = Record<string, unknown>;
/** One statement with `?` placeholders, the engine's rows back. */
type Query = (sql: string, params?: unknown[]) => Promise<Row[]>;

/** What each engine brings: its statements, its column listing, its identifier quotes. */
interface Connection {
  query: Query;
  /** every column of every table of the database: rows of table_name, column_name */
  columns: () => Promise<Row[]>;
  /** `key` is a reserved word in MySQL */
  quote: (identifier: string) => string;
  close: () => Promise<void>;
}

/** A database that cannot be read as a Go ncps's; the message is one line. */
export class GoDatabaseError extends Error {
  override name = "GoDatabaseError";
}

export class GoDatabase {
  private constructor(
    private readonly connection: Connection,
    /** tables, and the columns of each, as found */
    private readonly tables: Map<string, Set<string>>,
  ) {}

  private query(sql: string, params?: unknown[]): Promise<Row[]> {
    return this.connection.query(sql, params);
  }

  /** Opens the database a Go `--cache-database-url` names, read-only where the engine allows,
   * and checks that it is a Go ncps database. */
  static async open(url: string): Promise<GoDatabase> {
    let target;
    try {
      target = parseDatabaseUrl(url);
    } catch (err) {
      if (err instanceof DatabaseUrlError) throw new GoDatabaseError(`invalid Go ncps database URL: ${err.message}`);
      throw err;
    }
    let connection: Connection;
    try {
      connection = target.dialect === "sqlite" ? openSqlite(target.path) : target.dialect === "postgres" ? await openPostgres(target) : await openMysql(target);
    } catch (err) {
      throw new GoDatabaseError(`cannot open the Go ncps database ${target.redacted}: ${oneLine(err)}`);
    }
    try {
      const tables = new Map<string, Set<string>>();
      for (const row of await connection.columns()) {
        const table = String(row.table_name);
        if (!tables.has(table)) tables.set(table, new Set());
        tables.get(table)!.add(String(row.column_name));
      }
      const narinfos = tables.get("narinfos");
      if (narinfos?.has("text") && tables.has("nars")) {
        throw new GoDatabaseError(`${target.redacted} is a database of this ncps, not of the Go ncps`);
      }
      if (!narinfos?.has("hash") || !narinfos.has("id")) {
        throw new GoDatabaseError(`${target.redacted} is not a Go ncps database (no narinfos table with id and hash)`);
      }
      return new GoDatabase(connection, tables);
    } catch (err) {
      await connection.close().catch(() => {});
      throw err;
    }
  }

  /** Whether `url` names a Go ncps database (so this ncps must not migrate it). False also
   * when it cannot be opened. */
  static async detect(url: string): Promise<boolean> {
    try {
      await (await GoDatabase.open(url)).close();
      return true;
    } catch {
      return false;
    }
  }

  private has(table: string, column?: string): boolean {
    const columns = this.tables.get(table);
    return columns !== undefined && (column === undefined || columns.has(column));
  }

  /** The narinfo fields are columns (Go v0.8 on). */
  get holdsNarInfoFields(): boolean {
    return this.has("narinfos", "url");
  }

  async countNarInfos(): Promise<number> {
    const [row] = await this.query("SELECT COUNT(*) AS n FROM narinfos");
    return Number(row?.n ?? 0);
  }

  /** Narinfo rows in id order, strictly after `afterId`, at most `limit`. */
  async narInfos(afterId: number, limit: number): Promise<GoNarInfoRow[]> {
    const fields = this.holdsNarInfoFields;
    const columns = fields ? "id, hash, store_path, url, compression, file_hash, file_size, nar_hash, nar_size, deriver, system, ca" : "id, hash";
    const rows = await this.query(`SELECT ${columns} FROM narinfos WHERE id > ? ORDER BY id LIMIT ?`, [afterId, limit]);
    const withFields = fields ? rows.filter((r) => r.url !== null && r.url !== "") : [];
    const ids = withFields.map((r) => Number(r.id));
    const references = await this.listed("narinfo_references", "reference", ids);
    const signatures = await this.listed("narinfo_signatures", "signature", ids);
    return rows.map((r) => {
      const id = Number(r.id);
      const row: GoNarInfoRow = { id, hash: String(r.hash), fields: null };
      if (!fields || r.url === null || r.url === "") return row;
      row.fields = {
        storePath: text(r.store_path),
        url: String(r.url),
        compression: text(r.compression),
        fileHash: text(r.file_hash),
        fileSize: count(r.file_size),
        narHash: text(r.nar_hash),
        narSize: count(r.nar_size),
        deriver: text(r.deriver),
        system: text(r.system),
        ca: text(r.ca),
        references: (references.get(id) ?? []).sort(),
        signatures: signatures.get(id) ?? [],
      };
      return row;
    });
  }

  /** `column` of `table` for each narinfo id, in the order the Go ncps wrote them. */
  private async listed(table: string, column: string, ids: number[]): Promise<Map<number, string[]>> {
    const byId = new Map<number, string[]>();
    if (ids.length === 0 || !this.has(table)) return byId;
    const order = this.has(table, "id") ? "id" : column;
    const rows = await this.query(`SELECT narinfo_id, ${column} AS v FROM ${table} WHERE narinfo_id IN (${ids.map(() => "?").join(", ")}) ORDER BY narinfo_id, ${order}`, ids);
    for (const r of rows) {
      const id = Number(r.narinfo_id);
      if (!byId.has(id)) byId.set(id, []);
      byId.get(id)!.push(String(r.v));
    }
    return byId;
  }

  /** The chunk hashes, in order, of this narinfo's NAR when the Go ncps holds it as CDC
   * chunks (v0.9 on) and has all of them recorded; null when it holds no chunked NAR for it,
   * [] when the chunk list is incomplete. Decompressed and concatenated, the chunks are the
   * uncompressed NAR (what the Go ncps's migrate-chunks-to-nar checks against NarHash). */
  async chunks(narInfoId: number): Promise<string[] | null> {
    if (!this.has("nar_files", "total_chunks") || !this.has("narinfo_nar_files") || !this.has("nar_file_chunks")) return null;
    const [narFile] = await this.query(
      "SELECT f.id, f.total_chunks FROM narinfo_nar_files l JOIN nar_files f ON f.id = l.nar_file_id WHERE l.narinfo_id = ? AND f.total_chunks > 0 ORDER BY f.id LIMIT 1",
      [narInfoId],
    );
    if (!narFile) return null;
    const rows = await this.query(
      "SELECT c.hash FROM nar_file_chunks fc JOIN chunks c ON c.id = fc.chunk_id WHERE fc.nar_file_id = ? ORDER BY fc.chunk_index",
      [Number(narFile.id)],
    );
    return rows.length === Number(narFile.total_chunks) ? rows.map((r) => String(r.hash)) : [];
  }

  /** The narinfo hashes the Go ncps pinned (its main branch, 2026-03 on), oldest first. */
  async pinnedHashes(): Promise<string[]> {
    if (!this.has("pinned_closures", "hash")) return [];
    return (await this.query("SELECT hash FROM pinned_closures ORDER BY id")).map((r) => String(r.hash));
  }

  /** The signing key the Go ncps keeps in its database (v0.6 on), or null. */
  async secretKey(): Promise<string | null> {
    if (!this.has("config", "key")) return null;
    const rows = await this.query(`SELECT value FROM config WHERE ${this.connection.quote("key")} = ?`, [GO_SECRET_KEY]);
    return rows[0] ? String(rows[0].value) : null;
  }

  close(): Promise<void> {
    return this.connection.close();
  }
}

function text(v: unknown): string | null {
  return v === null || v === undefined || v === "" ? null : String(v);
}

function count(v: unknown): number | null {
  return v === null || v === undefined ? null : Number(v);
}

function oneLine(err: unknown): string {
  const message = err instanceof Error ? (errnoReason(err) ?? err.message) : String(err);
  return message.split("\n")[0]!;
}

const doubleQuoted = (identifier: string) => `"${identifier}"`;

function openSqlite(path: string): Connection {
  if (!existsSync(path)) throw new Error("no such file");
  // readonly: the import never writes to the Go database (the Go ncps may still be running)
  const db = new Database(path, { readonly: true, strict: true });
  db.exec("PRAGMA busy_timeout = 10000");
  const query: Query = async (sql, params = []) => db.prepare(sql).all(...(params as never[])) as Row[];
  return {
    query,
    quote: doubleQuoted,
    close: async () => db.close(),
    columns: async () => {
      const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[];
      return tables.flatMap(({ name }) =>
        (db.prepare(`SELECT name FROM pragma_table_info(?)`).all(name) as { name: string }[]).map((c) => ({ table_name: name, column_name: c.name })),
      );
    },
  };
}

async function openPostgres(target: ServerUrl): Promise<Connection> {
  const { default: postgres } = await import("postgres");
  const { postgresConnectOptions } = await import("./postgres.ts");
  const sql = postgres({ ...postgresConnectOptions(target, { maxOpenConns: 2, maxIdleConns: 2 }) });
  const query: Query = async (text, params = []) => {
    let n = 0;
    return (await sql.unsafe(text.replace(/\?/g, () => `$${++n}`), params as never[])) as unknown as Row[];
  };
  await query("SELECT 1");
  return {
    query,
    quote: doubleQuoted,
    close: () => sql.end({ timeout: 5 }),
    columns: () => query("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"),
  };
}

async function openMysql(target: ServerUrl): Promise<Connection> {
  const mysql = await import("mysql2/promise");
  const { mysqlConnectOptions } = await import("./mysql.ts");
  const pool = mysql.createPool({ ...mysqlConnectOptions(target), connectionLimit: 2 });
  const query: Query = async (text, params = []) => (await pool.query(text, params))[0] as Row[];
  await query("SELECT 1");
  return {
    query,
    quote: (identifier) => `\`${identifier}\``,
    close: () => pool.end(),
    columns: () => query("SELECT table_name AS table_name, column_name AS column_name FROM information_schema.columns WHERE table_schema = DATABASE()"),
  };
}
