#!/usr/bin/env bun
/** Peak RSS of ncps while N clients fetch one uncached NAR of SIZE_MB (default 8 x 200 MB).
 *
 *   bun bench/nar-miss-rss.ts [--size-mb 200] [--clients 8] [--rate-mb 0]
 *
 * Builds a real NAR with `nix-store --dump` (compression none, so the NAR is served as is),
 * signs a narinfo for it, serves both from a loopback upstream, starts ncps on loopback with
 * that upstream, has every client fetch the narinfo and then the NAR at once, checks each
 * client got the verified bytes, and prints ncps's VmHWM (peak RSS) from /proc. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startNcpsProcess } from "../test/helpers/ncps.ts";
import { readDigest } from "../test/helpers/synthetic-cache.ts";
import { publishNar, upstreamPublicKey } from "./publish-nar.ts";

const { values } = parseArgs({
  options: { "size-mb": { type: "string", default: "200" }, clients: { type: "string", default: "8" } },
});
const sizeMb = Number(values["size-mb"]);
const clients = Number(values.clients);

const work = await mkdtemp(join(tmpdir(), "ncps-bench-"));
try {
  // A real NAR of one big random file.
  const content = join(work, "content");
  await Bun.$`mkdir -p ${content} && head -c ${sizeMb * 1024 * 1024} /dev/urandom > ${content}/blob`.quiet();
  const narPath = join(work, "blob.nar");
  await Bun.$`nix-store --dump ${content} > ${narPath}`.quiet();
  const upstreamDir = join(work, "upstream");
  const { storeHash, narHash, narSize } = await publishNar(upstreamDir, { name: "bench-blob", path: narPath });
  const upstream = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (req) => {
      const file = Bun.file(join(upstreamDir, new URL(req.url).pathname));
      return file.size > 0 ? new Response(file) : new Response("not found", { status: 404 });
    },
  });

  const ncps = await startNcpsProcess({
    args: [
      "--cache-upstream-url",
      `http://127.0.0.1:${upstream.port}`,
      "--cache-upstream-public-key",
      upstreamPublicKey,
    ],
  });
  const pid = ncps.proc.pid;
  const rss = async (field: string) => {
    const status = await Bun.file(`/proc/${pid}/status`).text();
    return Number(/^(\w+):\s+(\d+) kB/m.exec(status.split("\n").find((l) => l.startsWith(field)) ?? "")?.[2] ?? 0) / 1024;
  };
  const idle = await rss("VmRSS");
  const started = performance.now();
  const served = await (await fetch(`${ncps.url}/${storeHash}.narinfo`)).text();
  const url = /^URL: (.*)$/m.exec(served)![1]!;
  const results = await Promise.all(
    Array.from({ length: clients }, async () => {
      return readDigest(await fetch(`${ncps.url}/${url}`));
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const peak = await rss("VmHWM");
  await ncps.stop();
  upstream.stop(true);
  const ok = results.every((r) => r.status === 200 && r.n === narSize && r.hash === narHash);
  console.log(
    JSON.stringify({
      clients,
      narMB: +(narSize / 1048576).toFixed(1),
      allVerified: ok,
      seconds: +seconds.toFixed(2),
      idleRssMB: +idle.toFixed(1),
      peakRssMB: +peak.toFixed(1),
    }),
  );
  if (!ok) process.exit(1);
} finally {
  await rm(work, { recursive: true, force: true });
}
