/** wrk as the benchmarks run it (keep-alive GETs of one URL, a Lua `done` hook printing one
 * JSON line), and the CPU time a server spent, read from /proc: on a shared machine
 * throughput swings with the neighbours' load, CPU per request much less. */
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

export interface WrkResult {
  rps: number;
  /** response bytes (headers and bodies) received per second, in MB */
  mbps: number;
  p50ms: number;
  p99ms: number;
  errors: number;
}

/** Runs wrk against `url`; `work` is a directory for its script. */
export async function wrk(
  work: string,
  url: string,
  opts: { connections: number; seconds: number; threads?: number; headers?: string[]; timeoutSeconds?: number; cpus?: string },
): Promise<WrkResult> {
  const script = join(work, "report.lua");
  await writeFile(
    script,
    `done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"rps\\":%.1f,\\"mbps\\":%.1f,\\"p50\\":%.3f,\\"p99\\":%.3f,\\"errors\\":%d}\\n",
    summary.requests / (summary.duration / 1e6), summary.bytes / summary.duration, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
`,
  );
  const threads = Math.min(opts.threads ?? 2, opts.connections);
  const headers = (opts.headers ?? []).flatMap((h) => ["-H", h]);
  const timeout = opts.timeoutSeconds === undefined ? [] : ["--timeout", `${opts.timeoutSeconds}s`];
  const pin = opts.cpus === undefined ? [] : ["taskset", "-c", opts.cpus];
  const out = await Bun.$`${pin} wrk -t ${threads} -c ${opts.connections} -d ${opts.seconds}s ${timeout} ${headers} -s ${script} ${url}`.text();
  const j = JSON.parse(/^JSON (.*)$/m.exec(out)![1]!);
  return { rps: j.rps, mbps: j.mbps, p50ms: j.p50, p99ms: j.p99, errors: j.errors };
}

/** CPUs for a server and for its load: on a machine of at least two, the server gets the
 * last CPU to itself and wrk (and any helper) the others, so the two do not take time slices
 * from each other, which made identical runs differ by 15% on two cores. */
export function splitCpus(): { server: string; load: string } | undefined {
  const n = navigator.hardwareConcurrency;
  return n >= 2 ? { server: String(n - 1), load: n === 2 ? "0" : `0-${n - 2}` } : undefined;
}

/** Pins every thread of each process to `cpus` (threads made later inherit it). */
export async function pinProcesses(pids: number[], cpus: string): Promise<void> {
  for (const pid of pids) await Bun.$`taskset -a -cp ${cpus} ${pid}`.quiet();
}

/** A /proc stat line's thread or process name and CPU seconds (user + system). The name is
 * in parentheses and may hold spaces or parentheses itself, so the fields after it are found
 * from the last ") ". */
function parseStat(stat: string): { name: string; seconds: number } | null {
  const open = stat.indexOf("(");
  const close = stat.lastIndexOf(") ");
  if (open < 0 || close < 0) return null;
  const fields = stat.slice(close + 2).split(" ");
  return { name: stat.slice(open + 1, close), seconds: (Number(fields[11]) + Number(fields[12])) / 100 }; // utime, stime in USER_HZ
}

/** CPU seconds (user + system) used so far by processes, their threads and workers included. */
export async function cpuSeconds(pids: number[]): Promise<number> {
  let seconds = 0;
  for (const pid of pids) seconds += parseStat(await Bun.file(`/proc/${pid}/stat`).text())?.seconds ?? 0;
  return seconds;
}

/** CPU seconds so far of each thread of `pid`, summed by thread name (JavaScriptCore's GC
 * helpers share one name, for one). Threads that ended are not counted. */
export async function cpuSecondsByThread(pid: number): Promise<Map<string, number>> {
  const byName = new Map<string, number>();
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [])) {
    const stat = parseStat(await Bun.file(`/proc/${pid}/task/${tid}/stat`).text().catch(() => ""));
    if (!stat) continue;
    const name = tid === String(pid) ? "main" : stat.name;
    byName.set(name, (byName.get(name) ?? 0) + stat.seconds);
  }
  return byName;
}

/** µs per request, one decimal: /proc counts in 10 ms ticks, which over a run of 100k+
 * requests is 0.1 µs or finer. */
const usPerRequest = (seconds: number, requests: number) => Math.round((seconds * 1e7) / requests) / 10;

/** wrk against `url`, with the CPU microseconds `pids` spent per request meanwhile, and for
 * the first pid the same split by thread (where the time goes: JS, GC, workers). */
export async function measureHits(
  work: string,
  url: string,
  pids: number[],
  opts: Parameters<typeof wrk>[2],
): Promise<WrkResult & { cpuUsPerRequest: number; cpuUsByThread: Record<string, number> }> {
  const before = await cpuSeconds(pids);
  const threadsBefore = await cpuSecondsByThread(pids[0]!);
  const result = await wrk(work, url, opts);
  const requests = result.rps * opts.seconds;
  const cpuUsPerRequest = usPerRequest((await cpuSeconds(pids)) - before, requests);
  const cpuUsByThread: Record<string, number> = {};
  for (const [name, seconds] of await cpuSecondsByThread(pids[0]!)) {
    const us = usPerRequest(seconds - (threadsBefore.get(name) ?? 0), requests);
    if (us > 0) cpuUsByThread[name] = us;
  }
  return { ...result, cpuUsPerRequest, cpuUsByThread };
}
