#!/usr/bin/env bun
/** Instructions per narinfo hit, counted by valgrind (callgrind): a figure that does not
 * move with the machine's load, for effects smaller than wall-clock runs can judge.
 *
 *   bun bench/hit-instructions.ts [--requests 4000] [--warmup 4000] [--variants plain,ratio0,ratio0.01]
 *
 * Each variant is a fresh ncps under callgrind proxying nginx, warmed, then its counters are
 * zeroed, --requests narinfo hits are sent (8 at a time), and the counters dumped; the result
 * is instructions per hit, the main thread's and in all (the other threads' counts swing with
 * when the JIT and the GC happen to run, the main thread's much less). Variants: `plain`; `ratioR` is
 * Prometheus plus OTLP tracing to a local collector at sampling ratio R. Under valgrind
 * threads run one at a time, about 50x slower, so the counts hold whatever else runs. */
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startNcpsProcess } from "../test/helpers/ncps.ts";
import { freePort } from "../test/helpers/ports.ts";
import { fixtureCache } from "./fixture-cache.ts";
import { startNginx } from "./nginx.ts";
import { startCollectorProcess } from "./otlp-collector.ts";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "4000" },
    warmup: { type: "string", default: "4000" },
    variants: { type: "string", default: "plain,ratio0,ratio0.01" },
    concurrency: { type: "string", default: "8" },
    // keep callgrind's dumps (one per thread and variant) here, for callgrind_annotate
    keep: { type: "string" },
  },
});

const work = values.keep ?? (await mkdtemp(join(tmpdir(), "ncps-instrbench-")));
const fixture = await fixtureCache(join(work, "cache"), 64 * 1024);
const nginx = await startNginx(work, fixture.cacheDir);
const collector = await startCollectorProcess(undefined);

/** `count` GETs of `url`, `concurrency` at a time, each body read. */
async function hits(url: string, count: number) {
  let left = count;
  await Promise.all(
    Array.from({ length: Number(values.concurrency) }, async () => {
      while (left-- > 0) {
        const res = await fetch(url);
        await res.arrayBuffer();
        if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      }
    }),
  );
}

/** Instructions (Ir) in each thread's dump file, by thread number. */
async function dumpTotals(dir: string, pid: number): Promise<Record<string, number>> {
  const totals: Record<string, number> = {};
  for (const name of await readdir(dir)) {
    const m = new RegExp(`^callgrind\\.out\\.${pid}\\.1-(\\d+)$`).exec(name);
    if (!m) continue;
    const text = await readFile(join(dir, name), "utf8");
    const total = /^(?:totals|summary): (\d+)/m.exec(text);
    totals[m[1]!] = Number(total?.[1] ?? 0);
  }
  return totals;
}

const upstreamArgs = (url: string) => ["--cache-upstream-url", url, "--cache-upstream-public-key", fixture.publicKey];


async function measure(variant: string) {
  const dir = join(work, variant);
  await Bun.$`mkdir -p ${dir}`.quiet();
  const wrapper = join(dir, "ncps-under-callgrind");
  await writeFile(
    wrapper,
    `#!/bin/sh\ncd ${dir}\nexec valgrind --tool=callgrind --separate-threads=yes --smc-check=all-non-file --collect-systime=no --log-file=${dir}/valgrind.log bun ${join(import.meta.dir, "../src/main.ts")} "$@"\n`,
    { mode: 0o755 },
  );
  const ratio = variant.startsWith("ratio") ? variant.slice("ratio".length) : null;
  // Stored first by an ncps not under valgrind: valgrind 3.19 cannot run Bun's HTTP client
  // (it stops at a PCMPESTRI), so the measured ncps must not fetch; its upstream is a closed
  // port, and its hits come from what is stored.
  const dataDir = join(dir, "data");
  const storing = await startNcpsProcess({ args: upstreamArgs(nginx.urls[0]!), dataDir, keepLogs: false });
  const stored = await fetch(`${storing.url}/${fixture.storeHash}.narinfo`);
  if (stored.status !== 200) throw new Error(`storing the narinfo: HTTP ${stored.status}`);
  await stored.arrayBuffer();
  await storing.stop();
  const ncps = await startNcpsProcess({
    command: wrapper,
    dataDir,
    args: [
      ...upstreamArgs(`http://127.0.0.1:${await freePort()}`),
      ...(ratio !== null ? ["--prometheus-enabled", "--otel-enabled", "--otel-grpc-url", collector.url] : []),
    ],
    env: ratio !== null ? { OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: ratio, OTEL_LOGS_EXPORTER: "none" } : {},
    keepLogs: false,
    timeoutMs: 300_000,
  }).catch(async (err) => {
    throw new Error(`${err}\n${await readFile(join(dir, "valgrind.log"), "utf8").catch(() => "")}`);
  });
  try {
    const url = `${ncps.url}/${fixture.storeHash}.narinfo`;
    await hits(url, Number(values.warmup));
    // the process under valgrind is the wrapper's exec: the same pid
    await Bun.$`callgrind_control -z ${ncps.proc.pid}`.cwd(dir).quiet();
    await hits(url, Number(values.requests));
    await Bun.$`callgrind_control -d ${ncps.proc.pid}`.cwd(dir).quiet();
    const totals = await dumpTotals(dir, ncps.proc.pid);
    // valgrind numbers threads by free slot, not by creation: only 1, the main thread, is
    // known for certain (the others are the JIT, GC helpers, the OTLP thread...)
    const perHit = Object.fromEntries(
      Object.entries(totals)
        .filter(([, n]) => n > 0)
        .map(([t, n]) => [Number(t) === 1 ? "main" : `thread ${Number(t)}`, Math.round(n / Number(values.requests))]),
    );
    const all = Object.values(perHit).reduce((a, b) => a + b, 0);
    console.log(JSON.stringify({ variant, requests: Number(values.requests), instructionsPerHit: all, byThread: perHit }));
  } finally {
    await ncps.stop();
  }
}

try {
  for (const variant of values.variants.split(",")) await measure(variant);
} finally {
  await collector.stop();
  await nginx.stop();
  if (!values.keep) await rm(work, { recursive: true, force: true });
}
