/** The schema migrations of each dialect, embedded in the binary: every file in
 * migrations/<dialect>/ is imported here statically (a unit test checks none is missing).
 * Forward only, applied in name order. */
import mysqlInit from "../../migrations/mysql/0001_init.sql" with { type: "text" };
import postgresInit from "../../migrations/postgres/0001_init.sql" with { type: "text" };
import sqliteInit from "../../migrations/sqlite/0001_init.sql" with { type: "text" };
import mysqlSizeAndPins from "../../migrations/mysql/0002_size_and_pins.sql" with { type: "text" };
import postgresSizeAndPins from "../../migrations/postgres/0002_size_and_pins.sql" with { type: "text" };
import sqliteSizeAndPins from "../../migrations/sqlite/0002_size_and_pins.sql" with { type: "text" };
import mysqlRealisations from "../../migrations/mysql/0003_realisations.sql" with { type: "text" };
import postgresRealisations from "../../migrations/postgres/0003_realisations.sql" with { type: "text" };
import sqliteRealisations from "../../migrations/sqlite/0003_realisations.sql" with { type: "text" };
import mysqlCdcChunks from "../../migrations/mysql/0004_cdc_chunks.sql" with { type: "text" };
import postgresCdcChunks from "../../migrations/postgres/0004_cdc_chunks.sql" with { type: "text" };
import sqliteCdcChunks from "../../migrations/sqlite/0004_cdc_chunks.sql" with { type: "text" };

export type Dialect = "sqlite" | "postgres" | "mysql";

export interface Migration {
  /** file name without `.sql`, e.g. `0001_init`; recorded in schema_migrations */
  name: string;
  sql: string;
}

const MIGRATIONS: Record<Dialect, readonly Migration[]> = {
  sqlite: [
    { name: "0001_init", sql: sqliteInit },
    { name: "0002_size_and_pins", sql: sqliteSizeAndPins },
    { name: "0003_realisations", sql: sqliteRealisations },
    { name: "0004_cdc_chunks", sql: sqliteCdcChunks },
  ],
  postgres: [
    { name: "0001_init", sql: postgresInit },
    { name: "0002_size_and_pins", sql: postgresSizeAndPins },
    { name: "0003_realisations", sql: postgresRealisations },
    { name: "0004_cdc_chunks", sql: postgresCdcChunks },
  ],
  mysql: [
    { name: "0001_init", sql: mysqlInit },
    { name: "0002_size_and_pins", sql: mysqlSizeAndPins },
    { name: "0003_realisations", sql: mysqlRealisations },
    { name: "0004_cdc_chunks", sql: mysqlCdcChunks },
  ],
};

export function migrationsFor(dialect: Dialect): Migration[] {
  return [...MIGRATIONS[dialect]];
}

/** Migrations not yet applied, in the order to apply them. */
export function pendingMigrations(migrations: readonly Migration[], applied: ReadonlySet<string>): Migration[] {
  return migrations.filter((m) => !applied.has(m.name)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Every known migration with its state, then those applied by a newer ncps (listed so the
 * operator sees them). */
export function migrationStatusOf(migrations: readonly Migration[], applied: ReadonlySet<string>): { name: string; applied: boolean }[] {
  const known = migrations.map((m) => ({ name: m.name, applied: applied.has(m.name) }));
  const unknown = [...applied].filter((name) => !migrations.some((m) => m.name === name)).sort();
  return [...known, ...unknown.map((name) => ({ name, applied: true }))];
}
