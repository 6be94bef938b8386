#!/usr/bin/env bun
/** Hot paths side by side with nginx serving the same files (needs `wrk` and `nginx`).
 *
 *   bun bench/hit-path.ts [--seconds 5] [--connections 25] [--nar-kb 1024]
 *
 * An upstream directory holds one signed narinfo and its NAR. nginx serves that directory
 * as a static binary cache; ncps proxies it (warmed, so both answer from local disk). wrk
 * then measures, on loopback, a narinfo hit and a NAR hit against each. 25 connections is
 * what one Nix client opens (http-connections). Prints one JSON line per measurement, with
 * the server's CPU time per request (`cpuUsPerRequest`, from /proc): on a shared machine
 * throughput swings with the neighbours' load, CPU per request much less. */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { encodeNix32 } from "../src/nix/nix32.ts";
import { serializeNarInfo } from "../src/nix/narinfo.ts";
import { formatPublicKey, generateSecretKey, signNarInfo, toPublicKey } from "../src/nix/signature.ts";
import { startNcpsProcess, type NcpsProcess } from "../test/helpers/ncps.ts";
import { startNginx } from "./nginx.ts";
import { measureHits } from "./wrk.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
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

interface CollectorProcess {
  url: string;
  spans(): Promise<number>;
  stop(): Promise<void>;
}

/** The OTLP collector under SCHED_IDLE in a process of its own (bench/otlp-collector-process.ts). */
async function startCollectorProcess(): Promise<CollectorProcess> {
  const proc = Bun.spawn(["chrt", "--idle", "0", "bun", join(import.meta.dir, "otlp-collector-process.ts")], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  const lines = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const nextLine = async (): Promise<string> => {
    for (;;) {
      const nl = buffered.indexOf("\n");
      if (nl >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        return line;
      }
      const { done, value } = await lines.read();
      if (done) throw new Error("the OTLP collector process ended");
      buffered += value;
    }
  };
  const url = await nextLine();
  return {
    url,
    async spans() {
      proc.stdin.write("spans\n");
      await proc.stdin.flush();
      return Number(await nextLine());
    },
    async stop() {
      await proc.stdin.end();
      await proc.exited;
    },
  };
}

const work = await mkdtemp(join(tmpdir(), "ncps-hitbench-"));
const cacheDir = join(work, "cache");
await Bun.$`mkdir -p ${cacheDir}/nar`.quiet();
const nar = crypto.getRandomValues(new Uint8Array(Number(values["nar-kb"]) * 1024));
const narHash = `sha256:${encodeNix32(new Bun.CryptoHasher("sha256").update(nar).digest())}`;
const storeHash = encodeNix32(crypto.getRandomValues(new Uint8Array(20)));
const key = generateSecretKey("bench-upstream-1");
const narinfo = signNarInfo(
  {
    storePath: `/nix/store/${storeHash}-bench`,
    url: `nar/${narHash.slice(7)}.nar`,
    compression: "none",
    fileHash: narHash,
    fileSize: nar.length,
    narHash,
    narSize: nar.length,
    references: [],
    sigs: [],
    extra: [],
  },
  key,
);
await Bun.write(join(cacheDir, narinfo.url), nar);
await writeFile(join(cacheDir, `${storeHash}.narinfo`), serializeNarInfo(narinfo));
await writeFile(join(cacheDir, "nix-cache-info"), "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n");

// nginx as a static binary cache, a common "cache" setup and the speed to beat
const nginx = await startNginx(work, cacheDir);
const nginxUrl = nginx.urls[0]!;
let ncps: NcpsProcess | undefined;
let collector: CollectorProcess | undefined;
try {
  collector = values.telemetry ? await startCollectorProcess() : undefined;
  ncps = await startNcpsProcess({
    args: [
      ...["--cache-upstream-url", nginxUrl, "--cache-upstream-public-key", formatPublicKey(toPublicKey(key))],
      ...(collector ? ["--prometheus-enabled", "--otel-enabled", "--otel-grpc-url", collector.url] : []),
    ],
    env: collector
      ? {
          OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
          OTEL_TRACES_SAMPLER_ARG: values["trace-ratio"],
          ...(values["otlp-logs"] ? {} : { OTEL_LOGS_EXPORTER: "none" }),
        }
      : {},
  });
  // warm: narinfo and NAR now live in ncps's own storage
  const served = await (await fetch(`${ncps.url}/${storeHash}.narinfo`)).text();
  if (!served.includes("URL:")) throw new Error(`warming ncps failed: ${served}\n${ncps.logs.join("\n")}`);
  const ncpsNarUrl = /^URL: (.*)$/m.exec(served)![1]!;
  await (await fetch(`${ncps.url}/${ncpsNarUrl}`)).arrayBuffer();
  await Bun.sleep(200);

  const cases = [
    ["narinfo hit", `${ncps.url}/${storeHash}.narinfo`, `${nginxUrl}/${storeHash}.narinfo`],
    [`NAR hit (${values["nar-kb"]} KiB)`, `${ncps.url}/${ncpsNarUrl}`, `${nginxUrl}/${narinfo.url}`],
  ] as const;
  for (const [name, ncpsUrl, nginxTarget] of cases) {
    for (const [server, url] of [["ncps", ncpsUrl], ["nginx", nginxTarget]] as const) {
      if (server === "nginx" && values["only-ncps"]) continue;
      const telemetry = server === "ncps" ? { telemetry: values.telemetry, otlpLogs: values.telemetry && values["otlp-logs"], spansReceived: 0 } : {};
      const pids = server === "ncps" ? [ncps!.proc.pid] : nginx.pids;
      const result = await measureHits(work, url, pids, { connections: Number(values.connections), seconds: Number(values.seconds) });
      if (collector) telemetry.spansReceived = await collector.spans();
      console.log(JSON.stringify({ case: name, server, connections: Number(values.connections), ...telemetry, ...result }));
    }
  }
} finally {
  await ncps?.stop();
  await collector?.stop();
  await nginx.stop();
  await rm(work, { recursive: true, force: true });
}
