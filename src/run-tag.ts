/** Temp files say which process run made them: `<pid>-<run>` in their names. A run killed
 * mid-write leaves them behind; the next start removes those whose run is over and leaves
 * those of running processes. The run token matters in containers, where ncps is PID 1 after
 * every restart. Shared by the cache's temp directory and local storage. */
import { randomBytes } from "node:crypto";

const RUN = randomBytes(4).toString("hex");

/** `<pid>-<run>` of this process's run. */
export const runTag = `${process.pid}-${RUN}`;

const TAG = /^(\d+)-([0-9a-f]{8})-/;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by someone else
  }
}

/** For a name starting with `<pid>-<run>-`: whether that run is over. null for other names. */
export function madeByEndedRun(name: string): boolean | null {
  const m = TAG.exec(name);
  if (!m) return null;
  const pid = Number(m[1]);
  return !(pid === process.pid ? m[2] === RUN : alive(pid));
}
