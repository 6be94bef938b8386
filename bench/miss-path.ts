#!/usr/bin/env bun
/** Cold NAR misses side by side with direct downloads from the same nginx upstream.
 *
 *   bun bench/miss-path.ts [--runs 3] [--size-mb 200] [--small-mb 64] [--only eight,one,rss]
 *
 * nginx serves a static binary cache twice: unlimited, and at 1 Gbit/s per connection
 * (`limit_rate 125m`). Each measurement starts a fresh ncps (empty storage) in front of one of
 * them; clients are curl. Prints one JSON line per run and a summary with medians and ratios
 * (direct time / ncps time: 1.0 means ncps keeps up). Needs nginx, curl, zstd, xz.
 *
 * Cases (issue 13):
 *   eight  8 different cold NARs of --small-mb at once from the limited upstream, and
 *          narinfo-hit p99 on the same ncps during those misses against idle
 *   one    one cold NAR of --size-mb per compression (none, zstd, xz), unlimited and limited
 *   rss    peak RSS (VmHWM) with 8 clients on one cold NAR per compression, and RSS after
 *
 * NAR contents are real files (the system's /usr, tarred), so zstd and xz compress and
 * decompress as they would on a real cache; they are made once and kept in
 * $TMPDIR/ncps-miss-bench-data between invocations. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startNcpsProcess, type NcpsProcess } from "../test/helpers/ncps.ts";
import { compressed, curlAll, dataDir, rawNar, type Compression } from "./miss-data.ts";
import { startNginx } from "./nginx.ts";
import { HIT_PROBE_RATE, pacedLatency } from "./paced-latency.ts";
import { publishNar, upstreamPublicKey, type PublishedNar } from "./publish-nar.ts";
import { median } from "./stats.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    "size-mb": { type: "string", default: "200" },
    "small-mb": { type: "string", default: "64" },
    only: { type: "string", default: "eight,one,rss" },
  },
});
const runs = Number(values.runs);
const sizeMb = Number(values["size-mb"]);
const smallMb = Number(values["small-mb"]);
const only = new Set(values.only.split(","));

const work = await mkdtemp(join(tmpdir(), "ncps-missbench-"));
const cacheDir = join(work, "cache");

console.error(`preparing NARs in ${dataDir} (made once)...`);
const big = {} as Record<Compression, PublishedNar>;
const bigRaw = await rawNar(`big-${sizeMb}`, sizeMb, 0);
for (const c of ["none", "zstd", "xz"] as Compression[]) {
  big[c] = await publishNar(cacheDir, { name: `bench-${c}`, path: bigRaw, file: await compressed(bigRaw, c), compression: c });
}
const small: PublishedNar[] = [];
for (let i = 0; i < 8; i++) {
  const raw = await rawNar(`small-${smallMb}-${i}`, smallMb, (i + 1) * smallMb);
  small.push(await publishNar(cacheDir, { name: `bench-${i}`, path: raw }));
}
const probe = await publishNar(cacheDir, { name: "probe", path: await rawNar("probe", 1, 0) });
const nginx = await startNginx(work, cacheDir, [{}, { extra: "limit_rate 125m;" }]);
const upstream = { unlimited: nginx.urls[0]!, limited: nginx.urls[1]! };

async function freshNcps(upstreamUrl: string): Promise<NcpsProcess> {
  return startNcpsProcess({
    args: ["--cache-upstream-url", upstreamUrl, "--cache-upstream-public-key", upstreamPublicKey],
  });
}

/** The NAR URL ncps serves for a published path (its narinfo fetched, not timed). */
async function ncpsNarUrl(ncps: NcpsProcess, p: PublishedNar): Promise<string> {
  const text = await (await fetch(`${ncps.url}/${p.storeHash}.narinfo`)).text();
  const m = /^URL: (.*)$/m.exec(text);
  if (!m) throw new Error(`no narinfo from ncps for ${p.storeHash}: ${text}`);
  return `${ncps.url}/${m[1]}`;
}

function procStatus(pid: number, field: "VmHWM" | "VmRSS"): number {
  const text = require("node:fs").readFileSync(`/proc/${pid}/status`, "utf8") as string;
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text)![1]) / 1024;
}

/** Narinfo hits at a steady 200 a second (pacedLatency: a probe that takes no core of its
 * own, unlike wrk), for `seconds` or until `until` settles. */
function hitLatency(url: string, seconds: number, until?: Promise<unknown>) {
  return pacedLatency(url, { perSecond: HIT_PROBE_RATE, seconds, until });
}

const summary: Record<string, number> = {};
const record = (name: string, value: number) => {
  (summaryRuns[name] ??= []).push(value);
};
const summaryRuns: Record<string, number[]> = {};

try {
  for (let run = 1; run <= runs; run++) {
    if (only.has("eight")) {
      const direct = await curlAll(small.map((p) => `${upstream.limited}/${p.narUrl}`));
      const ncps = await freshNcps(upstream.limited);
      try {
        const hitUrl = `${ncps.url}/${probe.storeHash}.narinfo`;
        await fetch(hitUrl);
        const idle = (await hitLatency(hitUrl, 2)).p99ms;
        const urls = await Promise.all(small.map((p) => ncpsNarUrl(ncps, p)));
        const misses = curlAll(urls);
        const [through, busy] = await Promise.all([misses, hitLatency(hitUrl, 60, misses).then((l) => l.p99ms)]);
        const line = { run, case: `8 x ${smallMb} MiB cold, 1 Gbit/s upstream`, direct, ncps: through, ratio: direct / through, hitP99IdleMs: idle, hitP99BusyMs: busy };
        console.log(JSON.stringify(line));
        record("eight.ratio", line.ratio);
        record("eight.hitP99x", busy / idle);
      } finally {
        await ncps.stop();
      }
    }
    if (only.has("one")) {
      for (const [label, base] of Object.entries(upstream)) {
        for (const c of ["none", "zstd", "xz"] as Compression[]) {
          const direct = await curlAll([`${base}/${big[c].narUrl}`]);
          const ncps = await freshNcps(base);
          try {
            const through = await curlAll([await ncpsNarUrl(ncps, big[c])]);
            console.log(JSON.stringify({ run, case: `one ${sizeMb} MiB ${c}, ${label}`, direct, ncps: through, ratio: direct / through }));
            record(`one.${label}.${c}.ratio`, direct / through);
          } finally {
            await ncps.stop();
          }
        }
      }
    }
    if (only.has("rss")) {
      for (const c of ["none", "zstd", "xz"] as Compression[]) {
        const ncps = await freshNcps(upstream.unlimited);
        try {
          const pid = ncps.proc.pid;
          const before = procStatus(pid, "VmRSS");
          const url = await ncpsNarUrl(ncps, big[c]);
          await curlAll(Array.from({ length: 8 }, () => url));
          const peak = procStatus(pid, "VmHWM");
          await Bun.sleep(7000); // past the verification thread's idle time (5 s), when it ends
          const after = procStatus(pid, "VmRSS");
          console.log(JSON.stringify({ run, case: `8 clients, one cold ${sizeMb} MiB ${c}`, rssBeforeMb: before, peakRssMb: peak, rssAfterMb: after }));
          record(`rss.${c}.peakMb`, peak);
          record(`rss.${c}.afterMinusBeforeMb`, after - before);
        } finally {
          await ncps.stop();
        }
      }
    }
  }
  for (const [name, xs] of Object.entries(summaryRuns)) summary[name] = Number(median(xs).toFixed(3));
  console.log(JSON.stringify({ summary: "medians", runs, ...summary }));
} finally {
  await nginx.stop();
  await rm(work, { recursive: true, force: true });
}
