/** Downloads and uploads in flight live in the temp directory under names that say which
 * process run made them: `ncps-<pid>-<run>-<n>...`. A crashed run leaves them behind; the next
 * start removes every such file not made by a live process's current run. The run token
 * matters in containers, where ncps is PID 1 after every restart. */
import { randomBytes } from "node:crypto";
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../telemetry/logger.ts";

const RUN = randomBytes(4).toString("hex");
let seq = 0;

/** A fresh temp file name for this run; `detail` (optional) helps a reader of the directory. */
export function tempFileName(kind: "download" | "upload", detail = ""): string {
  return `ncps-${process.pid}-${RUN}-${++seq}-${kind}${detail ? `-${detail.replace(/[^A-Za-z0-9.]/g, "_")}` : ""}`;
}

const OURS = /^ncps-(\d+)-([0-9a-f]{8})-/;

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
    const m = OURS.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    const current = pid === process.pid ? m[2] === RUN : alive(pid);
    if (current) continue;
    await rm(join(dir, name), { force: true, recursive: true });
    removed++;
  }
  if (removed > 0) logger.info("removed temp files left by a stopped ncps", { dir, count: removed });
  return removed;
}
