/** The schema migrations of each dialect, embedded in the binary: every file in
 * migrations/<dialect>/ is imported here statically (a unit test checks none is missing).
 * Forward only, applied in name order. */
import mysqlInit from "../../migrations/mysql/0001_init.sql" with { type: "text" };
import postgresInit from "../../migrations/postgres/0001_init.sql" with { type: "text" };
import sqliteInit from "../../migrations/sqlite/0001_init.sql" with { type: "text" };

export type Dialect = "sqlite" | "postgres" | "mysql";

export interface Migration {
  /** file name without `.sql`, e.g. `0001_init`; recorded in schema_migrations */
  name: string;
  sql: string;
}

const MIGRATIONS: Record<Dialect, readonly Migration[]> = {
  sqlite: [{ name: "0001_init", sql: sqliteInit }],
  postgres: [{ name: "0001_init", sql: postgresInit }],
  mysql: [{ name: "0001_init", sql: mysqlInit }],
};

export function migrationsFor(dialect: Dialect): Migration[] {
  return [...MIGRATIONS[dialect]];
}
