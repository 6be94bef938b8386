/** `ncps fsck`: opens the database and storage as `serve` would (without tidying anything:
 * `--dry-run` must change nothing), runs the checks of src/cache/fsck.ts, shows progress and
 * prints a summary. Exit status 1 while problems remain (found and not repaired). */
import { stat } from "node:fs/promises";
import { fsck, fsckChecks, type FsckProgress, type FsckReport } from "../cache/fsck.ts";
import { HotNarInfos } from "../cache/hot-narinfos.ts";
import { StoredNars } from "../cache/stored-nars.ts";
import { staleTempFiles } from "../cache/temp-files.ts";
import { storageChoice } from "../compose.ts";
import type { Config } from "../config/options.ts";
import { openMetadataStore, poolSettings, requireCurrentSchema } from "../db/open.ts";
import type { Broadcast } from "../lock/broadcast.ts";
import { openBroadcast, redisChoice } from "../lock/open.ts";
import { startupStep } from "../startup.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import { LocalBlobStore } from "../storage/local.ts";
import { openBlobStore } from "../storage/open.ts";
import { createLogger } from "../telemetry/logger.ts";
import { upstreamIdentity } from "../upstream/upstream-url.ts";
import { progressDisplay } from "./progress.ts";

export interface FsckFlags {
  repair: boolean;
  dryRun: boolean;
  verifyContent: boolean;
}

/** Problems remain: the one line the CLI prints, and exit status 1. */
class ProblemsRemain extends Error {
  override name = "ProblemsRemain";
  readonly userFacing = true;
}

/** How long --repair waits for Redis before repairing without telling the replicas. */
const BROADCAST_CONNECT_MS = 5_000;

/** How many problems of each check are listed before the summary. */
const LISTED_PER_CHECK = 20;

export async function runFsck(config: Config, flags: FsckFlags, out: (text: string) => void = (t) => process.stdout.write(t)): Promise<void> {
  const logger = createLogger(config.logLevel);
  const store = await startupStep("storage", () => openStoreAsItIs(config));
  const pool = poolSettings(config);
  const db = await startupStep("database", () => openMetadataStore(config.cacheDatabaseUrl, { migrate: false, pool }));
  let broadcast: Broadcast | undefined;
  try {
    await requireCurrentSchema(db);
    const repair = flags.repair && !flags.dryRun;
    // Replicas serve narinfos from memory for up to 30 s: what a repair removes, they are told
    // to forget, as when a running replica removes one.
    const hot = new HotNarInfos();
    if (repair) {
      broadcast = await openBroadcast(redisChoice(config), "narinfo-forget", logger);
      hot.shareThrough(broadcast);
      // Redis trouble is logged by the broadcast; the repair goes on without it.
      await broadcast.connected(BROADCAST_CONNECT_MS);
    }
    const progress = progressDisplay(process.stderr.isTTY === true, "fsck");
    const report = await fsck({
      db,
      store,
      nars: new StoredNars({ db, store, hot, logger }),
      upstreams: config.cacheUpstreamUrls.map(upstreamIdentity),
      staleTempFiles: async () => [...(await staleTempFiles(config.cacheTempPath)), ...(store instanceof LocalBlobStore ? await store.staleTempFiles() : [])],
      strayGraceMs: config.fsckStrayGrace,
      verifyContent: flags.verifyContent,
      repair,
      progress: (p) => progress.update({ label: phaseNames[p.phase], done: p.done, total: p.total }),
    });
    progress.end();
    out(render(report, repair));
    if (report.remaining > 0) {
      throw new ProblemsRemain(`${report.remaining} problem${report.remaining === 1 ? "" : "s"} found${repair ? " and not repaired" : flags.dryRun ? " (dry run: nothing changed)" : "; run with --repair to repair them"}`);
    }
  } finally {
    await broadcast?.close();
    await db.close();
  }
}

/** The store as it is: open (and for S3, reach the bucket), but neither create the directory
 * nor remove stale temp files as serve's start does; fsck reports those. */
async function openStoreAsItIs(config: Config): Promise<BlobStore> {
  const choice = storageChoice(config);
  if (!("local" in choice)) return openBlobStore(choice);
  const st = await stat(choice.local).catch(() => null);
  if (!st?.isDirectory()) throw new Error(`storage directory ${choice.local} does not exist`);
  return new LocalBlobStore(choice.local);
}

const phaseNames: Record<FsckProgress["phase"], string> = {
  storage: "listing storage",
  nars: "reading NAR records",
  narinfos: "reading narinfos",
  verify: "verifying NAR contents (bytes)",
  "re-check": "re-checking suspects",
  repair: "repairing",
};

function render(report: FsckReport, repair: boolean): string {
  const lines: string[] = [];
  for (const { id, title } of fsckChecks) {
    const mine = report.problems.filter((p) => p.check === id);
    if (mine.length === 0) continue;
    lines.push(`${title}:`);
    for (const p of mine.slice(0, LISTED_PER_CHECK)) lines.push(`  ${p.subject}${p.repaired ? "  (repaired)" : ""}`);
    if (mine.length > LISTED_PER_CHECK) lines.push(`  ... and ${mine.length - LISTED_PER_CHECK} more`);
  }
  if (lines.length > 0) lines.push("");
  const width = Math.max(...fsckChecks.map((c) => c.title.length));
  lines.push(`${"check".padEnd(width)}  ${"found".padStart(6)}  ${"repaired".padStart(8)}`);
  for (const c of report.checks) {
    const found = c.checked ? String(c.found) : "-";
    const repaired = c.checked && repair ? String(c.repaired) : "-";
    const note = c.checked ? "" : "  (with --verify-content)";
    lines.push(`${c.title.padEnd(width)}  ${found.padStart(6)}  ${repaired.padStart(8)}${note}`);
  }
  const found = report.problems.length;
  lines.push(found === 0 ? "\nno problems found" : `\n${found} found, ${found - report.remaining} repaired, ${report.remaining} remaining`);
  return `${lines.join("\n")}\n`;
}
