#!/usr/bin/env bun
/** NAR hit throughput, a chunked NAR against a whole one (needs `wrk`).
 *
 *   bun bench/cdc-hit.ts [--seconds 5] [--nar FILE]
 *
 * One NAR (FILE, e.g. `nix-store --dump` of a package, or 8 MiB of random bytes) published
 * uncompressed by a synthetic upstream; two ncps processes in front of it, one with
 * --cache-cdc-enabled; each warmed (the NAR stored). wrk then fetches the NAR at 1 and at 16
 * connections from each, as a client taking identity bytes (whole: decompressed from its
 * zstd file; chunked: reassembled chunk by chunk) and as Nix (zstd: the stored file with
 * sendfile, or the chunks' frames one after another). One JSON line per measurement, with
 * ncps's CPU time per request. */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseNarInfo } from "../src/nix/narinfo.ts";
import { startNcpsProcess, type NcpsProcess } from "../test/helpers/ncps.ts";
import { makeSyntheticCache } from "../test/helpers/synthetic-cache.ts";
import { startUpstream } from "../test/helpers/upstream-server.ts";
import { measureHits } from "./wrk.ts";

const { values } = parseArgs({ options: { seconds: { type: "string", default: "5" }, nar: { type: "string" } } });
const work = await mkdtemp(join(tmpdir(), "ncps-cdc-hit-"));
const nar = values.nar ? new Uint8Array(await Bun.file(values.nar).arrayBuffer()) : crypto.getRandomValues(new Uint8Array(8 << 20).map(() => 0)).map((_, i) => (i * 2654435761) >>> 24);
const syn = await makeSyntheticCache(join(work, "upstream"));
const path = await syn.add("bench", { nar, compression: "none" });
const upstream = await startUpstream(syn.dir);

const running: NcpsProcess[] = [];
try {
  for (const cdc of [false, true]) {
    const ncps = await startNcpsProcess({
      args: ["--cache-upstream-url", upstream.url, "--cache-upstream-public-key", syn.publicKey, ...(cdc ? ["--cache-cdc-enabled"] : [])],
    });
    running.push(ncps);
    const narinfo = parseNarInfo(await (await fetch(`${ncps.url}/${path.hash}.narinfo`)).text());
    const url = `${ncps.url}/${narinfo.url}`;
    await (await fetch(url)).arrayBuffer();
    // warm: stored (a file under nar/, or chunks under chunk/)
    for (let i = 0; i < 200 && (await readdir(join(ncps.dataDir, cdc ? "chunk" : "nar")).catch(() => [])).length === 0; i++) await Bun.sleep(50);
    for (const connections of [1, 16]) {
      for (const accept of ["identity", "zstd"]) {
        const r = await measureHits(work, url, [ncps.proc.pid], { connections, seconds: Number(values.seconds), headers: [`Accept-Encoding: ${accept}`], timeoutSeconds: 60 });
        console.log(JSON.stringify({ nar: cdc ? "chunked" : "whole", narBytes: nar.length, connections, acceptEncoding: accept, ...r }));
      }
    }
  }
} finally {
  for (const n of running) await n.stop();
  await upstream.stop();
  await rm(work, { recursive: true, force: true });
}
