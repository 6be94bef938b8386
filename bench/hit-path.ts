#!/usr/bin/env bun
/** Hot paths side by side with nginx serving the same files (needs `wrk` and `nginx`).
 *
 *   bun bench/hit-path.ts [--seconds 5] [--connections 25] [--nar-kb 1024]
 *   bun bench/hit-path.ts --against-plain [--trace-ratio 0.01] [--rounds 10] [--seconds 5]
 *
 * An upstream directory holds one signed narinfo and its NAR. nginx serves that directory
 * as a static binary cache; ncps proxies it (warmed, so both answer from local disk). wrk
 * then measures, on loopback, a narinfo hit and a NAR hit against each. 25 connections is
 * what one Nix client opens (http-connections). Prints one JSON line per measurement, with
 * the server's CPU time per request (`cpuUsPerRequest`, from /proc): on a shared machine
 * throughput swings with the neighbours' load, CPU per request much less. With
 * --against-plain: tracing's cost, a traced and a plain ncps measured in turns. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startNcpsProcess, type NcpsProcess } from "../test/helpers/ncps.ts";
import { fixtureCache } from "./fixture-cache.ts";
import { startNginx } from "./nginx.ts";
import { startCollectorProcess, type CollectorProcess } from "./otlp-collector.ts";
import { measureHits, pinProcesses, splitCpus, wrk } from "./wrk.ts";
import { median } from "./stats.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    // unmeasured load first, so the figures are of code the JIT has finished with: a server
    // runs for days, and tracing's rarely taken paths (1% sampling) tier up late
    "warmup-seconds": { type: "string", default: "3" },
    // servers on the last CPU, wrk and the collector on the others (see splitCpus)
    "no-pin": { type: "boolean", default: false },
    // narinfo hits on a traced ncps (metrics, tracing at --trace-ratio) and a plain one,
    // measured in turns, --rounds of them: tracing's cost as one ratio (see compareTelemetry)
    "against-plain": { type: "boolean", default: false },
    rounds: { type: "string", default: "10" },
    // with --against-plain: the "traced" ncps plain too, so the ratio shows what noise and
    // the order of the two alone make of it
    control: { type: "boolean", default: false },
    connections: { type: "string", default: "25" },
    "nar-kb": { type: "string", default: "1024" },
    // metrics and tracing on (Prometheus, and OTLP spans to a local gRPC collector), to
    // compare with a run without
    telemetry: { type: "boolean", default: false },
    "only-ncps": { type: "boolean", default: false },
    // with --telemetry: the share of traces started here that are recorded (OTEL_TRACES_SAMPLER_ARG)
    "trace-ratio": { type: "string", default: "1" },
    // with --telemetry: the log lines too, over OTLP (else OTEL_LOGS_EXPORTER=none)
    "otlp-logs": { type: "boolean", default: false },
  },
});

const work = await mkdtemp(join(tmpdir(), "ncps-hitbench-"));
const fixture = await fixtureCache(join(work, "cache"), Number(values["nar-kb"]) * 1024);
const { cacheDir, storeHash } = fixture;

// nginx as a static binary cache, a common "cache" setup and the speed to beat
const cpus = values["no-pin"] ? undefined : splitCpus();
if (cpus) await pinProcesses([process.pid], cpus.load); // this script's own threads too
const nginx = await startNginx(work, cacheDir);
if (cpus) await pinProcesses(nginx.pids, cpus.server);
const nginxUrl = nginx.urls[0]!;
const connections = Number(values.connections);
const load = { connections, cpus: cpus?.load };
const servers: NcpsProcess[] = [];
let collector: CollectorProcess | undefined;

/** An ncps proxying nginx, pinned, with narinfo and NAR already in its own storage; with
 * `traced`, metrics and tracing on, exporting to the collector. */
async function startWarmNcps(traced: boolean): Promise<{ ncps: NcpsProcess; narinfoUrl: string; narUrl: string }> {
  const ncps = await startNcpsProcess({
    args: [
      ...["--cache-upstream-url", nginxUrl, "--cache-upstream-public-key", fixture.publicKey],
      ...(traced ? ["--prometheus-enabled", "--otel-enabled", "--otel-grpc-url", collector!.url] : []),
    ],
    env: traced
      ? {
          OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
          OTEL_TRACES_SAMPLER_ARG: values["trace-ratio"],
          ...(values["otlp-logs"] ? {} : { OTEL_LOGS_EXPORTER: "none" }),
        }
      : {},
    keepLogs: false,
  });
  servers.push(ncps);
  if (cpus) await pinProcesses([ncps.proc.pid], cpus.server);
  const narinfoUrl = `${ncps.url}/${storeHash}.narinfo`;
  const served = await (await fetch(narinfoUrl)).text();
  if (!served.includes("URL:")) throw new Error(`warming ncps failed: ${served}\n${ncps.logs.join("\n")}`);
  const narUrl = `${ncps.url}/${/^URL: (.*)$/m.exec(served)![1]!}`;
  await (await fetch(narUrl)).arrayBuffer();
  await Bun.sleep(200);
  return { ncps, narinfoUrl, narUrl };
}

const warmup = (url: string) => (Number(values["warmup-seconds"]) > 0 ? wrk(work, url, { ...load, seconds: Number(values["warmup-seconds"]) }) : undefined);

/** Narinfo hits on two ncps at once, one plain and one traced, measured in turns (ABBA) of
 * --seconds each: the machine's drift over minutes then weighs on both alike, which separate
 * runs (15% apart when identical) could not promise. Prints each turn and the medians. */
async function compareTelemetry() {
  const plain = await startWarmNcps(false);
  const traced = await startWarmNcps(!values.control);
  await warmup(plain.narinfoUrl);
  await warmup(traced.narinfoUrl);
  const rounds = Number(values.rounds);
  const turns: { off: Awaited<ReturnType<typeof measureHits>>; on: Awaited<ReturnType<typeof measureHits>> }[] = [];
  for (let round = 1; round <= rounds; round++) {
    const order = round % 2 ? [plain, traced] : [traced, plain];
    const result = new Map<typeof plain, Awaited<ReturnType<typeof measureHits>>>();
    for (const server of order) result.set(server, await measureHits(work, server.narinfoUrl, [server.ncps.proc.pid], { ...load, seconds: Number(values.seconds) }));
    const turn = { off: result.get(plain)!, on: result.get(traced)! };
    turns.push(turn);
    console.log(JSON.stringify({ case: "narinfo hit", round, ...turn }));
  }
  const r = (x: number) => Math.round(x * 1000) / 1000;
  const medianRatio = (figure: (m: (typeof turns)[number]["on"]) => number) => r(median(turns.map((t) => figure(t.on) / figure(t.off))));
  // where the difference goes: each thread's median µs per request (0 in a turn it did not run)
  const byThread = (side: "off" | "on") => {
    const names = new Set(turns.flatMap((t) => Object.keys(t[side].cpuUsByThread)));
    return Object.fromEntries([...names].map((name) => [name, r(median(turns.map((t) => t[side].cpuUsByThread[name] ?? 0)))]));
  };
  console.log(
    JSON.stringify({
      case: "narinfo hit, traced against plain",
      traceRatio: values.control ? "control: both plain" : Number(values["trace-ratio"]),
      rounds,
      spansReceived: await collector!.spans(),
      cpuUsByThread: { off: byThread("off"), on: byThread("on") },
      medianRatio: { rps: medianRatio((m) => m.rps), cpuUsPerRequest: medianRatio((m) => m.cpuUsPerRequest), p99ms: medianRatio((m) => m.p99ms) },
    }),
  );
}

/** Each case against ncps, then against nginx serving the same file. */
async function againstNginx() {
  const { ncps, narinfoUrl, narUrl } = await startWarmNcps(values.telemetry);
  const cases = [
    ["narinfo hit", narinfoUrl, `${nginxUrl}/${storeHash}.narinfo`],
    [`NAR hit (${values["nar-kb"]} KiB)`, narUrl, `${nginxUrl}/${fixture.narUrl}`],
  ] as const;
  for (const [name, ncpsUrl, nginxTarget] of cases) {
    for (const [server, url] of [["ncps", ncpsUrl], ["nginx", nginxTarget]] as const) {
      if (server === "nginx" && values["only-ncps"]) continue;
      const telemetry = server === "ncps" ? { telemetry: values.telemetry, otlpLogs: values.telemetry && values["otlp-logs"], spansReceived: 0 } : {};
      const pids = server === "ncps" ? [ncps.proc.pid] : nginx.pids;
      await warmup(url);
      const result = await measureHits(work, url, pids, { ...load, seconds: Number(values.seconds) });
      if (collector) telemetry.spansReceived = await collector.spans();
      console.log(JSON.stringify({ case: name, server, connections, ...telemetry, ...result }));
    }
  }
}

try {
  collector = values.telemetry || values["against-plain"] ? await startCollectorProcess(cpus?.load) : undefined;
  if (values["against-plain"]) await compareTelemetry();
  else await againstNginx();
} finally {
  for (const ncps of servers) await ncps.stop();
  await collector?.stop();
  await nginx.stop();
  await rm(work, { recursive: true, force: true });
}
