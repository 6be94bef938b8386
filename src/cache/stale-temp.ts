/** Downloads and uploads in flight live in the temp directory as `ncps-<pid>-...` and
 * `ncps-upload-<pid>-...`. A process that crashed leaves them behind; the next start removes
 * those whose process is gone (never recorded, so nothing else refers to them). */
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../telemetry/logger.ts";

const OURS = /^ncps-(?:upload-)?(\d+)-/;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by someone else
  }
}

export async function removeStaleTempFiles(dir: string, logger: Logger): Promise<number> {
  let removed = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const pid = Number(OURS.exec(name)?.[1]);
    if (!pid || pid === process.pid || alive(pid)) continue;
    await rm(join(dir, name), { force: true, recursive: true });
    removed++;
  }
  if (removed > 0) logger.info("removed temp files left by a stopped ncps", { dir, count: removed });
  return removed;
}
