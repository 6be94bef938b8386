/** PostgreSQL and MariaDB for tests: the servers named by NCPS_TEST_POSTGRES_URL and
 * NCPS_TEST_MYSQL_URL, and a fresh, uniquely named database on them per test. */
import mysql from "mysql2/promise";
import postgres from "postgres";
import { parseDatabaseUrl, type ServerUrl } from "../../src/db/database-url.ts";
import { mysqlConnectOptions } from "../../src/db/mysql.ts";
import { postgresConnectOptions } from "../../src/db/postgres.ts";

export type ServerDialect = "postgres" | "mysql";

export const TEST_SERVER_ENV: Record<ServerDialect, string> = {
  postgres: "NCPS_TEST_POSTGRES_URL",
  mysql: "NCPS_TEST_MYSQL_URL",
};

/** The server's URL, or why it cannot be used (unset, unreachable): checked once per file. */
export async function testServer(dialect: ServerDialect): Promise<{ url: string; problem: null } | { url: null; problem: string }> {
  const name = TEST_SERVER_ENV[dialect];
  const url = process.env[name];
  if (!url) return { url: null, problem: `${name} is not set` };
  try {
    await withAdmin(url, async (run) => {
      await run("SELECT 1");
    });
  } catch (err) {
    return { url: null, problem: `${name} is unreachable: ${(err as Error).message}` };
  }
  return { url, problem: null };
}

export interface TestDatabase {
  /** the server URL with the database replaced by the fresh one */
  url: string;
  name: string;
  /** runs SQL in the fresh database (for checks the store interface has no getter for) */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  drop(): Promise<void>;
}

let counter = 0;

/** Creates a uniquely named empty database on the server `serverUrl` names. */
export async function createTestDatabase(serverUrl: string): Promise<TestDatabase> {
  const name = `ncps_test_${process.pid}_${Date.now().toString(36)}_${counter++}`;
  await withAdmin(serverUrl, (run) => run(`CREATE DATABASE ${name}`));
  const url = withDatabase(serverUrl, name);
  const target = parseDatabaseUrl(url) as ServerUrl;
  let conn: Awaited<ReturnType<typeof connectTo>> | null = null;
  return {
    url,
    name,
    async query<T>(sql: string, params: unknown[] = []) {
      conn ??= await connectTo(target);
      return (await conn.run(sql, params)) as T[];
    },
    async drop() {
      await conn?.end();
      conn = null;
      await withAdmin(serverUrl, (run) =>
        run(target.dialect === "postgres" ? `DROP DATABASE IF EXISTS ${name} WITH (FORCE)` : `DROP DATABASE IF EXISTS ${name}`),
      );
    },
  };
}

/** `url` with its database (the last path segment) replaced by `database`. */
export function withDatabase(url: string, database: string): string {
  const q = url.indexOf("?");
  const base = q === -1 ? url : url.slice(0, q);
  const query = q === -1 ? "" : url.slice(q);
  return base.replace(/\/[^/]*$/, `/${database}`) + query;
}

async function withAdmin<T>(url: string, fn: (run: (sql: string) => Promise<unknown>) => Promise<T>): Promise<T> {
  const conn = await connectTo(parseDatabaseUrl(url) as ServerUrl);
  try {
    return await fn((sql) => conn.run(sql, []));
  } finally {
    await conn.end();
  }
}

/** One connection through the same driver options the stores use. */
async function connectTo(target: ServerUrl): Promise<{ run(sql: string, params: unknown[]): Promise<unknown[]>; end(): Promise<void> }> {
  if (target.dialect === "postgres") {
    const sql = postgres({ ...postgresConnectOptions(target), max: 1, connect_timeout: 3 });
    return {
      run: async (text, params) => [...(await sql.unsafe(text, params as never[]))],
      end: () => sql.end({ timeout: 1 }),
    };
  }
  const conn = await mysql.createConnection({ ...mysqlConnectOptions(target), connectTimeout: 3000 });
  return {
    run: async (text, params) => (await conn.query(text, params))[0] as unknown[],
    end: () => conn.end(),
  };
}
