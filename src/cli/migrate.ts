/** `ncps migrate up|status`: the database schema, without starting a server. */
import type { Config } from "../config/options.ts";
import { openMetadataStore, poolSettings } from "../db/open.ts";
import { startupStep } from "../startup.ts";

export async function migrate(config: Config, opts: { dryRun: boolean; statusOnly: boolean }): Promise<void> {
  const db = await startupStep("database", () => openMetadataStore(config.cacheDatabaseUrl, { migrate: false, pool: poolSettings(config) }));
  try {
    if (opts.statusOnly) {
      for (const m of await db.migrationStatus()) console.log(`${m.applied ? "applied" : "pending"}  ${m.name}`);
      return;
    }
    const applied = await db.migrate({ dryRun: opts.dryRun });
    if (applied.length === 0) console.log("database is up to date");
    for (const name of applied) console.log(`${opts.dryRun ? "would apply" : "applied"}  ${name}`);
  } finally {
    await db.close();
  }
}
