#!/usr/bin/env bun
/** What content-defined chunking saves on real software (needs `tar` and `nix-store`).
 *
 *   bun bench/cdc-dedup.ts a-1.0.tgz a-1.1.tgz [b-2.0.tgz b-2.1.tgz ...]
 *
 * Each tarball (npm packages from `npm pack name@version`, or any .tar.gz) is unpacked and
 * dumped as a NAR with `nix-store --dump`, as Nix would store it. Prints, per tarball and in
 * all, the bytes stored without CDC (each NAR zstd-compressed whole, as ncps stores an
 * uncompressed NAR) and with it (each chunk once across every NAR, each its own zstd frame,
 * default sizes): the chunker and writer are ncps's own. */
import { mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { ChunkWriter } from "../src/cache/chunk-writer.ts";
import { defaultChunkSizes } from "../src/cache/chunker.ts";

const tarballs = process.argv.slice(2);
if (tarballs.length === 0) throw new Error("usage: bun bench/cdc-dedup.ts a-1.0.tgz a-1.1.tgz ...");
const work = await mkdtemp(join(tmpdir(), "ncps-cdc-dedup-"));
const seen = new Map<string, number>(); // chunk hash -> frame bytes, across every NAR
let narTotal = 0;
let wholeTotal = 0;
try {
  for (const [i, tarball] of tarballs.entries()) {
    const dir = join(work, `src-${i}`);
    await mkdir(dir);
    const untar = Bun.spawnSync(["tar", "-xzf", tarball, "-C", dir]);
    if (untar.exitCode !== 0) throw new Error(`tar: ${untar.stderr.toString()}`);
    const dump = Bun.spawnSync(["nix-store", "--dump", dir], { stdout: "pipe" });
    if (dump.exitCode !== 0) throw new Error(`nix-store --dump: ${dump.stderr.toString()}`);
    const nar = new Uint8Array(dump.stdout);
    const whole = Bun.zstdCompressSync(nar, { level: 3 }).length;
    const chunkDir = join(work, `chunks-${i}`);
    await mkdir(chunkDir);
    const writer = new ChunkWriter(defaultChunkSizes, chunkDir);
    for (let at = 0; at < nar.length; at += 1 << 20) writer.write(nar.subarray(at, at + (1 << 20)));
    const chunks = writer.end();
    let added = 0;
    let shared = 0;
    for (const c of new Map(chunks.map((c) => [c.hash, c])).values()) {
      if (seen.has(c.hash)) shared += c.narBytes;
      else {
        seen.set(c.hash, c.size);
        added += c.size;
      }
    }
    narTotal += nar.length;
    wholeTotal += whole;
    console.log(JSON.stringify({ nar: basename(tarball), narBytes: nar.length, chunks: chunks.length, wholeZstdBytes: whole, newChunkBytes: added, narBytesInChunksStoredBefore: shared }));
    await rm(chunkDir, { recursive: true, force: true });
  }
  const chunked = [...seen.values()].reduce((n, s) => n + s, 0);
  console.log(JSON.stringify({ total: true, nars: tarballs.length, narBytes: narTotal, storedWithoutCdc: wholeTotal, storedWithCdc: chunked, ratio: +(chunked / wholeTotal).toFixed(3) }));
} finally {
  await rm(work, { recursive: true, force: true });
}
