/** Open the MetadataStore a `--cache-database-url` names. */
import { access, constants, mkdir, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { parseDatabaseUrl, type SqliteUrl } from "./database-url.ts";
import type { MetadataStore } from "./metadata-store.ts";
import { SqliteMetadataStore } from "./sqlite.ts";

/** A database that cannot be opened for a reason the user can fix; the message is one line. */
export class DatabaseOpenError extends Error {
  override name = "DatabaseOpenError";
}

/** Opens the store and, unless `migrate: false`, applies pending migrations (so the store is
 * ready to use). `ncps migrate` passes `migrate: false` and drives migrations itself. */
export async function openMetadataStore(url: string, opts: { migrate?: boolean } = {}): Promise<MetadataStore> {
  const target = parseDatabaseUrl(url);
  let store: MetadataStore;
  switch (target.dialect) {
    case "sqlite":
      store = await openSqlite(target);
      break;
    case "postgres":
    case "mysql":
      throw new DatabaseOpenError(`${target.dialect} databases are not supported yet (${target.redacted}): use a sqlite: URL`);
  }
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

function oneLine(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const text = e instanceof Error ? e.message : String(err);
  // "ENOTDIR: not a directory, mkdir '/x'": the path is already in our own message
  const short = e?.code && text.startsWith(e.code) ? text.split(", ")[0]! : text;
  return short.split("\n")[0]!;
}
