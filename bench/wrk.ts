/** wrk as the benchmarks run it (keep-alive GETs of one URL, a Lua `done` hook printing one
 * JSON line), and the CPU time a server spent, read from /proc: on a shared machine
 * throughput swings with the neighbours' load, CPU per request much less. */
import { writeFile } from "node:fs/promises";
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
  opts: { connections: number; seconds: number; threads?: number; headers?: string[]; timeoutSeconds?: number },
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
  const out = await Bun.$`wrk -t ${threads} -c ${opts.connections} -d ${opts.seconds}s ${timeout} ${headers} -s ${script} ${url}`.text();
  const j = JSON.parse(/^JSON (.*)$/m.exec(out)![1]!);
  return { rps: j.rps, mbps: j.mbps, p50ms: j.p50, p99ms: j.p99, errors: j.errors };
}

/** CPU seconds (user + system) used so far by processes, their threads and workers included. */
export async function cpuSeconds(pids: number[]): Promise<number> {
  let ticks = 0;
  for (const pid of pids) {
    const fields = (await Bun.file(`/proc/${pid}/stat`).text()).split(") ")[1]!.split(" ");
    ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
  }
  return ticks / 100; // USER_HZ
}

/** wrk against `url`, with the CPU microseconds `pids` spent per request meanwhile. */
export async function measureHits(
  work: string,
  url: string,
  pids: number[],
  opts: Parameters<typeof wrk>[2],
): Promise<WrkResult & { cpuUsPerRequest: number }> {
  const before = await cpuSeconds(pids);
  const result = await wrk(work, url, opts);
  // one decimal: /proc counts in 10 ms ticks, which over a run of 100k+ requests is 0.1 µs or finer
  const cpuUsPerRequest = Math.round((((await cpuSeconds(pids)) - before) * 1e7) / (result.rps * opts.seconds)) / 10;
  return { ...result, cpuUsPerRequest };
}
