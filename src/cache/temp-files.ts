/** Downloads and uploads in flight live in the temp directory under names that say which
 * process run made them: `ncps-<pid>-<run>-<n>...`. A crashed run leaves them behind; the next
 * start removes every such file not made by a live process's current run. The run token
 * matters in containers, where ncps is PID 1 after every restart. */
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { madeByEndedRun, runTag } from "../run-tag.ts";
import type { Logger } from "../telemetry/logger.ts";

let seq = 0;

/** A fresh temp file name for this run; `detail` (optional) helps a reader of the directory. */
export function tempFileName(kind: "download" | "relay" | "upload" | "import", detail = ""): string {
  return `ncps-${runTag}-${++seq}-${kind}${detail ? `-${detail.replace(/[^A-Za-z0-9.]/g, "_")}` : ""}`;
}

/** Paths of the temp files in `dir` that no running ncps is using (fsck reports them). */
export async function staleTempFiles(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names.filter((name) => name.startsWith("ncps-") && madeByEndedRun(name.slice("ncps-".length)) === true).map((name) => join(dir, name));
}

export async function removeStaleTempFiles(dir: string, logger: Logger): Promise<number> {
  let removed = 0;
  for (const path of await staleTempFiles(dir)) {
    await rm(path, { force: true, recursive: true });
    removed++;
  }
  if (removed > 0) logger.info("removed temp files left by a stopped ncps", { dir, count: removed });
  return removed;
}
