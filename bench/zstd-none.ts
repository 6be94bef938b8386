#!/usr/bin/env bun
/** Uncompressed NARs (compression=none upstreams, as harmonia and nix-serve serve them): disk
 * used by ncps and the time of a warm `nix copy --from` of their closure, with the NARs
 * stored as they are (`--old`: an ncps from before issue 16, e.g. `git archive 797e24e`),
 * stored zstd-compressed (this tree), and compressed per request as harmonia does (a small
 * server in front of the plain cache, zstd level 3 per GET).
 *
 *   bun bench/zstd-none.ts --old /path/to/ncps-wrapper [--mb 256] [--runs 3]
 *
 * The closure: 10 small paths and one of --mb MB of the host's /usr/bin (compressible like
 * most store paths). Loopback: the wire is never the bottleneck here, so the bytes sent are
 * printed too (on a 1 Gbit/s LAN, a byte costs 8 ns). Prints one JSON line per variant. */
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { createReadStream } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { parseArgs } from "node:util";
import { constants as zlib, createZstdCompress } from "node:zlib";
import { startNcpsProcess, type NcpsProcess } from "../test/helpers/ncps.ts";
import { buildClosure, createNixEnv, makeKeyPair, publishCache, substitute } from "../test/helpers/nix.ts";
import { startUpstream } from "../test/helpers/upstream-server.ts";

const { values } = parseArgs({
  options: { old: { type: "string" }, mb: { type: "string", default: "256" }, runs: { type: "string", default: "3" } },
});
const runs = Number(values.runs);
const nix = await createNixEnv();
const work = await mkdtemp(join(tmpdir(), "ncps-bench-zstd-"));
const key = await makeKeyPair(nix, "bench-1");
const builder = nix.store("builder");
const built = await buildClosure(nix, builder, { count: 10, bigBytes: Number(values.mb) * 1024 * 1024, bigFrom: "usr-bin", seed: `bench-${Date.now()}` });
const plainDir = join(work, "plain");
await publishCache(nix, builder, built.paths, plainDir, { compression: "none", key });
const upstream = await startUpstream(plainDir);

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) total += (await stat(join(dir, name))).size;
  return total;
}

/** Median seconds of `runs` warm copies into fresh stores. */
async function warmCopies(url: string, trusted: string): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const store = nix.store(`warm-${crypto.randomUUID()}`);
    const started = performance.now();
    const r = await substitute(nix, { from: url, paths: [built.top], trustedKeys: [trusted], store });
    if (r.code !== 0) throw new Error(r.stderr);
    times.push((performance.now() - started) / 1000);
    await rm(store, { recursive: true, force: true });
  }
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
}

function narBytesSent(ncps: NcpsProcess, from: number): number {
  return ncps.logs
    .slice(from)
    .map((l) => { try { return JSON.parse(l); } catch { return null; } })
    .filter((r) => r?.msg === "request" && r.method === "GET" && String(r.path).includes("/nar/"))
    .reduce((sum, r) => sum + Number(r.bytes ?? 0), 0);
}

async function ncpsVariant(name: string, command: string | undefined) {
  const ncps = await startNcpsProcess({ command, args: ["--cache-upstream-url", upstream.url, "--cache-upstream-public-key", key.publicKey] });
  const cold = await substitute(nix, { from: ncps.url, paths: [built.top], trustedKeys: [ncps.publicKey], store: nix.store(`cold-${name}`) });
  if (cold.code !== 0) throw new Error(cold.stderr);
  while (ncps.logs.filter((l) => l.includes('"NAR stored"')).length < built.paths.length) await Bun.sleep(50);
  const logged = ncps.logs.length;
  const seconds = await warmCopies(ncps.url, ncps.publicKey);
  const line = { variant: name, diskBytes: await dirBytes(join(ncps.dataDir, "nar")), warmCopySeconds: seconds, narBytesSentPerCopy: Math.round(narBytesSent(ncps, logged) / runs) };
  await ncps.stop();
  return line;
}

/** harmonia's way: the plain cache, each NAR compressed as it is sent. */
async function perRequestVariant() {
  const server = Bun.serve({
    port: 0,
    async fetch(req) {
      const path = join(plainDir, new URL(req.url).pathname);
      if (!(await Bun.file(path).exists())) return new Response("not found", { status: 404 });
      if (!path.endsWith(".nar")) return new Response(Bun.file(path));
      const zstd = createZstdCompress({ params: { [zlib.ZSTD_c_compressionLevel]: 3 } });
      return new Response(Readable.toWeb(createReadStream(path).pipe(zstd)) as ReadableStream, { headers: { "content-encoding": "zstd" } });
    },
  });
  const seconds = await warmCopies(`http://127.0.0.1:${server.port}`, key.publicKey);
  server.stop(true);
  return { variant: "compressed per request (harmonia)", diskBytes: await dirBytes(join(plainDir, "nar")), warmCopySeconds: seconds };
}

try {
  console.log(JSON.stringify({ closurePaths: built.paths.length, narBytes: await dirBytes(join(plainDir, "nar")) }));
  if (values.old) console.log(JSON.stringify(await ncpsVariant("stored as is (before)", values.old)));
  console.log(JSON.stringify(await ncpsVariant("stored zstd (now)", undefined)));
  console.log(JSON.stringify(await perRequestVariant()));
} finally {
  await upstream.stop();
  await nix.cleanup();
  await rm(work, { recursive: true, force: true });
}
