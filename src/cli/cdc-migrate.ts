/** `ncps migrate-nar-to-chunks` / `ncps migrate-chunks-to-nar` (the Go ncps's names and
 * flags): open the database and storage as `serve` does, convert (src/cache/cdc-migration.ts),
 * show progress on stderr and print a summary. Exit status 1 when a NAR failed. */
import { configuredChunkSizes, fixChunkSizes, recordedChunkSizes } from "../cache/chunk-sizes.ts";
import { chunksToNars, narsToChunks, type CdcMigrationReport } from "../cache/cdc-migration.ts";
import { HotNarInfos } from "../cache/hot-narinfos.ts";
import { StoredNars } from "../cache/stored-nars.ts";
import { storageChoice } from "../compose.ts";
import type { Config } from "../config/options.ts";
import { openMetadataStore, poolSettings, requireCurrentSchema } from "../db/open.ts";
import { startupStep } from "../startup.ts";
import { openBlobStore } from "../storage/open.ts";
import { createLogger } from "../telemetry/logger.ts";
import { progressDisplay } from "./progress.ts";

class NarsFailed extends Error {
  override name = "NarsFailed";
  readonly userFacing = true;
}

export async function runCdcMigration(
  config: Config,
  direction: "to-chunks" | "to-nar",
  flags: { dryRun: boolean; concurrency: number },
  out: (text: string) => void = (t) => process.stdout.write(t),
): Promise<CdcMigrationReport> {
  const logger = createLogger(config.logLevel);
  const store = await startupStep("storage", () => openBlobStore(storageChoice(config)));
  const pool = poolSettings(config);
  const db = await startupStep("database", () => openMetadataStore(config.cacheDatabaseUrl, { migrate: config.cacheDatabaseAutoMigrate, pool }));
  try {
    await requireCurrentSchema(db);
    // the recorded sizes, else (CDC never enabled) the configured ones, recorded now
    const configured = configuredChunkSizes(config);
    let sizes = await recordedChunkSizes(db);
    if (!sizes && direction === "to-chunks" && !flags.dryRun) await startupStep("content-defined chunking", () => fixChunkSizes(db, configured));
    sizes ??= configured;
    const progress = progressDisplay(process.stderr.isTTY === true, direction === "to-chunks" ? "migrate-nar-to-chunks" : "migrate-chunks-to-nar");
    const opts = {
      db,
      store,
      nars: new StoredNars({ db, store, hot: new HotNarInfos(), logger, tempDir: config.cacheTempPath }),
      sizes,
      tempDir: config.cacheTempPath,
      dryRun: flags.dryRun,
      concurrency: flags.concurrency,
      logger,
      progress: (done: number) => progress.update({ label: "NARs", done, total: null }),
    };
    const report = direction === "to-chunks" ? await narsToChunks(opts) : await chunksToNars(opts);
    progress.end();
    const verb = flags.dryRun ? "would convert" : "converted";
    out(`${verb} ${report.converted}, already ${direction === "to-chunks" ? "chunked" : "whole"} ${report.done}, kept as they are ${report.kept}, failed ${report.failed}\n`);
    if (report.failed > 0) throw new NarsFailed(`${report.failed} NAR${report.failed === 1 ? "" : "s"} not converted (see the log); run again to retry`);
    return report;
  } finally {
    await db.close();
  }
}
