#!/usr/bin/env bun
/** A cold NAR fetched at once by N clients on each of two replicas (shared SQLite database and
 * storage directory, Redis for the download claim): time to first byte and total time for the
 * clients of each replica, and which replica downloaded it.
 *
 *   bun bench/replica-miss.ts [--size-mb 200] [--clients 4] [--rate-mb 50] [--mode relay|storage-wait]
 *
 * --rate-mb throttles the upstream (0: loopback speed), as an internet link would.
 * --mode storage-wait makes the replica that loses the claim wait for the NAR to be stored,
 * as before replicas streamed from each other: both advertise a URL where nothing listens,
 * so streaming from the holder fails and the waiter falls back to polling storage.
 * Needs Redis at NCPS_TEST_REDIS_URL (default redis://127.0.0.1:6379). */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { encodeNix32 } from "../src/nix/nix32.ts";
import { startNcpsProcess, type NcpsProcess } from "../test/helpers/ncps.ts";
import { startStoppedPort, startUpstream } from "../test/helpers/upstream-server.ts";
import { publishNar, upstreamPublicKey } from "./publish-nar.ts";
import { median } from "./stats.ts";

const { values } = parseArgs({
  options: {
    "size-mb": { type: "string", default: "200" },
    clients: { type: "string", default: "4" },
    "rate-mb": { type: "string", default: "50" },
    mode: { type: "string", default: "relay" },
  },
});
const size = Number(values["size-mb"]) * 1024 * 1024;
const clients = Number(values.clients);
const rate = Number(values["rate-mb"]) * 1024 * 1024;
const mode = values.mode;
if (mode !== "relay" && mode !== "storage-wait") throw new Error("--mode is relay or storage-wait");
const redis = new URL(process.env.NCPS_TEST_REDIS_URL ?? "redis://127.0.0.1:6379");

/** One client: ms to the first body byte and to the last, and whether the bytes verified. */
async function fetchTimed(url: string, expected: string): Promise<{ ttfbMs: number; totalMs: number; ok: boolean }> {
  const started = performance.now();
  const res = await fetch(url);
  const h = new Bun.CryptoHasher("sha256");
  let ttfbMs = -1;
  for await (const chunk of res.body!) {
    if (ttfbMs < 0) ttfbMs = performance.now() - started;
    h.update(chunk);
  }
  const totalMs = performance.now() - started;
  return { ttfbMs, totalMs, ok: res.status === 200 && `sha256:${encodeNix32(h.digest())}` === expected };
}


const work = await mkdtemp(join(tmpdir(), "ncps-bench-replicas-"));
const replicas: NcpsProcess[] = [];
try {
  const upstreamDir = join(work, "upstream");
  const narFile = join(work, "blob");
  await Bun.$`head -c ${size} /dev/urandom > ${narFile}`.quiet();
  const { storeHash, narUrl, narHash } = await publishNar(upstreamDir, { name: "bench-blob", path: narFile });
  const upstream = await startUpstream(upstreamDir);
  if (rate > 0) upstream.fault(`/${narUrl}`, { kind: "slow", bytesPerSecond: rate });

  const shared = join(work, "shared");
  await mkdir(shared);
  const nowhere = await startStoppedPort();
  const prefix = `ncps-bench-${crypto.randomUUID()}:`;
  for (const name of ["a", "b"]) {
    replicas.push(
      await startNcpsProcess({
        dataDir: join(work, name),
        args: [
          "--cache-upstream-url", upstream.url,
          "--cache-upstream-public-key", upstreamPublicKey,
          "--cache-storage-local", shared,
          "--cache-database-url", `sqlite:${join(shared, "db.sqlite")}`,
          "--cache-redis-addrs", `${redis.hostname}:${redis.port || "6379"}`,
          "--cache-lock-redis-key-prefix", prefix,
          ...(mode === "storage-wait" ? ["--cache-advertise-url", nowhere.url] : []),
        ],
      }),
    );
  }
  const served = await (await fetch(`${replicas[0]!.url}/${storeHash}.narinfo`)).text();
  const url = /^URL: (.*)$/m.exec(served)![1]!;
  await fetch(`${replicas[1]!.url}/${storeHash}.narinfo`).then((r) => r.arrayBuffer());

  const startedAt = performance.now();
  const results = await Promise.all(
    replicas.flatMap((r) => Array.from({ length: clients }, () => fetchTimed(`${r.url}/${url}`, narHash))),
  );
  const wallMs = performance.now() - startedAt;
  const perReplica = replicas.map((r, i) => {
    const mine = results.slice(i * clients, (i + 1) * clients);
    return {
      replica: i === 0 ? "a" : "b",
      downloaded: r.logs.some((l) => l.includes('"NAR download started"')),
      ttfbMs: { median: Math.round(median(mine.map((m) => m.ttfbMs))), max: Math.round(Math.max(...mine.map((m) => m.ttfbMs))) },
      totalMs: { median: Math.round(median(mine.map((m) => m.totalMs))), max: Math.round(Math.max(...mine.map((m) => m.totalMs))) },
    };
  });
  const ok = results.every((r) => r.ok);
  console.log(
    JSON.stringify({
      mode,
      narMiB: size / 1048576,
      upstreamMiBps: rate / 1048576 || "loopback",
      clientsPerReplica: clients,
      allVerified: ok,
      upstreamDownloads: upstream.hits(`/${narUrl}`),
      wallMs: Math.round(wallMs),
      perReplica,
    }),
  );
  await upstream.stop();
  if (!ok) process.exitCode = 1;
} finally {
  for (const r of replicas) await r.stop();
  await rm(work, { recursive: true, force: true });
}
