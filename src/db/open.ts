/** Open the MetadataStore a `--cache-database-url` names. */
import { access, constants, mkdir, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { GoDatabase } from "./go-database.ts";
import { DatabaseUrlError, parseDatabaseUrl, type DatabaseUrl, type ServerUrl, type SqliteUrl } from "./database-url.ts";
import type { Config } from "../config/options.ts";
import { StartupError } from "../startup.ts";
import type { MetadataStore } from "./metadata-store.ts";
import type { PoolSettings } from "./rows.ts";
import { SqliteMetadataStore } from "./sqlite.ts";

export type { PoolSettings } from "./rows.ts";

/** A database that cannot be opened for a reason the user can fix; the message is one line. */
export class DatabaseOpenError extends Error {
  override name = "DatabaseOpenError";
}

/** Opens the store and, unless `migrate: false`, applies pending migrations (so the store is
 * ready to use). `ncps migrate` passes `migrate: false` and drives migrations itself. `pool`
 * sizes the connection pool of postgres and mysql (sqlite has none). */
export async function openMetadataStore(url: string, opts: { migrate?: boolean; pool?: PoolSettings } = {}): Promise<MetadataStore> {
  let target: DatabaseUrl;
  try {
    target = parseDatabaseUrl(url);
  } catch (err) {
    if (err instanceof DatabaseUrlError) throw new DatabaseOpenError(`invalid database URL: ${err.message}`);
    throw err;
  }
  let store: MetadataStore;
  switch (target.dialect) {
    case "sqlite":
      store = await openSqlite(target);
      break;
    case "postgres":
    case "mysql":
      store = await openServer(target, opts.pool ?? {});
      break;
  }
  await refuseGoDatabase(store, url, target.redacted);
  if (opts.migrate ?? true) {
    try {
      await store.migrate();
    } catch (err) {
      await store.close().catch(() => {});
      throw new DatabaseOpenError(`cannot migrate the database ${target.redacted}: ${oneLine(err)}`);
    }
  }
  return store;
}

/** The pool sizes --cache-database-pool-max-open-conns and -max-idle-conns set. */
export function poolSettings(config: Pick<Config, "cacheDatabasePoolMaxOpenConns" | "cacheDatabasePoolMaxIdleConns">): PoolSettings {
  return { maxOpenConns: config.cacheDatabasePoolMaxOpenConns, maxIdleConns: config.cacheDatabasePoolMaxIdleConns };
}

/** Refuse to work on a schema with migrations still pending (opened with `migrate: false`, or
 * --cache-database-auto-migrate off): every command but `migrate` needs the current one. */
export async function requireCurrentSchema(db: MetadataStore): Promise<void> {
  const pending = (await db.migrationStatus()).filter((m) => !m.applied).map((m) => m.name);
  if (pending.length > 0) throw new StartupError(`database schema is not up to date (pending: ${pending.join(", ")}): run \`ncps migrate up\``);
}

/** A Go ncps database has tables of the same names (schema_migrations included) and another
 * schema: reading or migrating it fails halfway with a driver error. Checked only while none
 * of ncps's own migrations is applied. */
async function refuseGoDatabase(store: MetadataStore, url: string, redacted: string): Promise<void> {
  let fresh: boolean;
  try {
    fresh = (await store.migrationStatus()).every((m) => !m.applied);
  } catch (err) {
    fresh = true; // Go's schema_migrations has other columns than ours
    if (!(await GoDatabase.detect(url))) {
      await store.close().catch(() => {});
      throw err;
    }
  }
  if (!fresh || !(await GoDatabase.detect(url))) return;
  await store.close().catch(() => {});
  throw new DatabaseOpenError(
    `${redacted} is a Go ncps database, which ncps does not use as it is: give ncps a database of its own and bring the Go ncps's content over with \`ncps import-go --from-cache-database-url ...\` (see the README, "Switching from the Go ncps")`,
  );
}

async function openSqlite(target: SqliteUrl): Promise<SqliteMetadataStore> {
  if (target.path !== ":memory:") {
    const dir = dirname(target.path);
    try {
      await mkdir(dir, { recursive: true });
    } catch (err) {
      throw new DatabaseOpenError(`cannot create the database directory ${dir}: ${oneLine(err)}`);
    }
    // SQLite needs to create the -wal and -shm files next to the database
    try {
      await access(dir, constants.W_OK);
    } catch {
      throw new DatabaseOpenError(`the database directory ${dir} is not writable`);
    }
    const st = await stat(target.path).catch(() => null);
    if (st && !st.isFile()) throw new DatabaseOpenError(`the database path ${target.path} is not a regular file`);
  }
  try {
    return new SqliteMetadataStore(target.path);
  } catch (err) {
    throw new DatabaseOpenError(`cannot open the sqlite database ${target.path}: ${oneLine(err)}`);
  }
}

async function openServer(target: ServerUrl, pool: PoolSettings): Promise<MetadataStore> {
  try {
    // Drivers load only when used: SQLite users do not pay their memory (about 13 MB).
    if (target.dialect === "postgres") return await (await import("./postgres.ts")).PostgresMetadataStore.open(target, { pool });
    return await (await import("./mysql.ts")).MysqlMetadataStore.open(target, { pool });
  } catch (err) {
    throw new DatabaseOpenError(`cannot connect to the ${target.dialect} database ${target.redacted}: ${connectFailure(err, target)}`);
  }
}

/** Why a connection failed, in words, never with the password (driver messages do not hold
 * it, but the password is masked should one ever echo it). */
function connectFailure(err: unknown, target: ServerUrl): string {
  const code = (err as { code?: unknown }).code;
  const where = target.address.kind === "tcp" ? `${target.address.host}:${target.address.port}` : target.address.socketPath;
  let reason: string;
  switch (code) {
    case "ECONNREFUSED":
      reason = `connection refused by ${where}`;
      break;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      reason = `cannot resolve the host name ${target.address.kind === "tcp" ? target.address.host : where}`;
      break;
    case "ENOENT":
      reason = `no socket at ${where}`;
      break;
    case "CONNECT_TIMEOUT":
    case "ETIMEDOUT":
      reason = `no answer from ${where} in time (connect_timeout)`;
      break;
    default:
      reason = oneLine(err);
  }
  const password = target.password;
  return password ? reason.replaceAll(password, "***") : reason;
}

function oneLine(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const text = e instanceof Error ? e.message : String(err);
  // "ENOTDIR: not a directory, mkdir '/x'": the path is already in our own message
  const short = e?.code && text.startsWith(e.code) ? text.split(", ")[0]! : text;
  return short.split("\n")[0]!;
}
