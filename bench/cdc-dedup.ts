#!/usr/bin/env bun
/** Content-defined chunking on real software (issue 18): what two consecutive releases of a
 * package cost on disk with and without CDC, ncps run as a black box. Needs npm (the
 * registry), nix-store and xz (with --compression xz). bench/cdc-hit.ts measures the hits.
 *
 *   bun bench/cdc-dedup.ts [--compression zstd|xz] [--cdc-sizes 16384/65536/262144]
 *                          [--package name@older,newer ...]
 *
 * Each package below is fetched at two releases with `npm pack`, unpacked, and dumped with
 * `nix-store --dump` into a NAR (kept under $TMPDIR/ncps-cdc-dedup, so reruns skip this). A
 * synthetic upstream serves the ten NARs signed, compressed as --compression says. Two fresh
 * ncps fetch them all, one storing NARs whole (as fetched) and one with --cache-cdc-enabled
 * (Go's default chunk sizes unless --cdc-sizes); after each NAR is recorded the bytes of
 * files under the storage's nar/ and chunk/ are counted, so the second release's row is what
 * it added; "new NAR bytes" is how much of a NAR was in chunks not stored before (what
 * chunking shares, whatever compression then makes of it). Prints a table, then it as JSON.
 * The NARs stay in $TMPDIR/ncps-cdc-dedup for `bun bench/cdc-hit.ts --nar <file>`. */
import { Database } from "bun:sqlite";
import { mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseNarInfo } from "../src/nix/narinfo.ts";
import { startNcpsProcess, type NcpsProcess } from "../test/helpers/ncps.ts";
import { makeSyntheticCache, readDigest, type SyntheticPath } from "../test/helpers/synthetic-cache.ts";
import { startUpstream } from "../test/helpers/upstream-server.ts";

const { values } = parseArgs({
  options: {
    compression: { type: "string", default: "zstd" },
    "cdc-sizes": { type: "string", default: "16384/65536/262144" },
    // in place of the list below, e.g. --package typescript@5.4.4,5.4.5
    package: { type: "string", multiple: true, default: [] },
  },
});
const compression = values.compression;
if (compression !== "zstd" && compression !== "xz") throw new Error("--compression is zstd or xz");
const [cdcMin, cdcAvg, cdcMax] = values["cdc-sizes"].split("/");
if (cdcMax === undefined) throw new Error("--cdc-sizes is min/avg/max");

/** Consecutive releases (a patch or minor apart), JavaScript and WebAssembly. */
const DEFAULT_PACKAGES: [name: string, ...versions: string[]][] = [
  ["typescript", "5.5.3", "5.5.4"],
  ["react-dom", "18.2.0", "18.3.1"],
  ["prettier", "3.3.2", "3.3.3"],
  ["esbuild-wasm", "0.23.0", "0.23.1"],
  ["lodash", "4.17.20", "4.17.21"],
];
const PACKAGES = values.package.length === 0 ? DEFAULT_PACKAGES : values.package.map((spec): [string, ...string[]] => {
  const at = spec.lastIndexOf("@");
  if (at <= 0) throw new Error(`--package ${spec}: expected name@older,newer`);
  return [spec.slice(0, at), ...spec.slice(at + 1).split(",")];
});

const downloads = join(process.env.TMPDIR ?? tmpdir(), "ncps-cdc-dedup");
const work = await mkdtemp(join(tmpdir(), "ncps-cdc-bench-"));

/** Where the NAR of the unpacked npm package (its `package/` directory) is, made once. */
async function narFile(name: string, version: string): Promise<string> {
  const file = join(downloads, `${name.replace("/", "+")}-${version}.nar`);
  if (!(await Bun.file(file).exists())) {
    const dir = await mkdtemp(join(work, "pack-"));
    const tgz = (await Bun.$`npm pack --silent ${`${name}@${version}`} --pack-destination ${dir}`.cwd(dir).text()).trim();
    await Bun.$`tar -xzf ${join(dir, tgz)} -C ${dir}`;
    await Bun.$`nix-store --dump ${join(dir, "package")} > ${file}.part && mv ${file}.part ${file}`;
  }
  return file;
}

/** The NAR compressed as the upstream serves it (xz made once). */
async function compressed(narFile: string, nar: Uint8Array): Promise<Uint8Array> {
  if (compression === "zstd") return Bun.zstdCompressSync(nar);
  const file = `${narFile}.xz`;
  if (!(await Bun.file(file).exists())) await Bun.$`xz -6 -T1 -c ${narFile} > ${file}.part && mv ${file}.part ${file}`;
  return Bun.file(file).bytes();
}

async function bytesUnder(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}

const mb = (n: number) => (n / 1e6).toFixed(2);

await mkdir(downloads, { recursive: true });
const syn = await makeSyntheticCache(join(work, "upstream"));
const paths: { name: string; version: string; path: SyntheticPath }[] = [];
for (const [name, ...versions] of PACKAGES) {
  for (const version of versions) {
    const file = await narFile(name, version);
    const nar = await Bun.file(file).bytes();
    const path = await syn.add(`${name}-${version}`, { nar, compression, fileBytes: await compressed(file, nar) });
    paths.push({ name, version, path });
  }
}
const upstream = await startUpstream(syn.dir);

type Mode = "whole" | "cdc";
/** stored bytes added by each NAR, per mode, in `paths` order */
const added: Record<Mode, number[]> = { whole: [], cdc: [] };
/** NAR bytes in chunks new to each NAR */
const newNarBytes: number[] = [];

try {
  for (const mode of ["whole", "cdc"] as Mode[]) {
    const dataDir = join(work, mode);
    const dbFile = join(work, `${mode}.sqlite`);
    let ncps: NcpsProcess | undefined;
    try {
      ncps = await startNcpsProcess({
        dataDir,
        args: [
          ...["--cache-upstream-url", upstream.url, "--cache-upstream-public-key", syn.publicKey],
          ...["--cache-database-url", `sqlite:${dbFile}`],
          ...(mode === "cdc" ? ["--cache-cdc-enabled", "--cache-cdc-min", cdcMin!, "--cache-cdc-avg", cdcAvg!, "--cache-cdc-max", cdcMax] : []),
        ],
      });
      let before = 0;
      let narBytesBefore = 0;
      for (const [i, { path }] of paths.entries()) {
        const narinfo = parseNarInfo(await (await fetch(`${ncps.url}/${path.hash}.narinfo`)).text());
        const got = await readDigest(await fetch(`${ncps.url}/${narinfo.url}`, { headers: { "accept-encoding": "identity" }, decompress: false }));
        if (mode === "cdc" && got.hash !== path.narinfo.narHash) throw new Error(`${path.storePath}: ncps sent other bytes`);
        // recorded once verified (and chunked), just after the client has the last byte
        for (const deadline = Date.now() + 60_000; ; await Bun.sleep(50)) {
          const db = new Database(dbFile, { readonly: true });
          const n = (db.prepare("SELECT COUNT(*) AS n FROM nars").get() as { n: number }).n;
          const chunked = mode === "cdc" ? (db.prepare("SELECT COALESCE(SUM(nar_bytes), 0) AS b FROM chunks").get() as { b: number }).b : 0;
          db.close();
          if (n === i + 1) {
            if (mode === "cdc") newNarBytes.push(chunked - narBytesBefore);
            narBytesBefore = chunked;
            break;
          }
          if (Date.now() > deadline) throw new Error(`${path.storePath} was not recorded`);
        }
        const now = (await bytesUnder(join(dataDir, "nar"))) + (await bytesUnder(join(dataDir, "chunk")));
        added[mode].push(now - before);
        before = now;
      }
    } finally {
      await ncps?.stop();
    }
  }

  console.log(`\nstored bytes added (MB), upstream ${compression}, CDC sizes ${values["cdc-sizes"]}`);
  console.log("package | release | NAR | new NAR bytes (CDC) | whole (as fetched) | CDC");
  const totals = { nar: 0, newNar: 0, whole: 0, cdc: 0 };
  for (const [i, { name, version, path }] of paths.entries()) {
    console.log(`${name} | ${version} | ${mb(path.nar.length)} | ${mb(newNarBytes[i]!)} | ${mb(added.whole[i]!)} | ${mb(added.cdc[i]!)}`);
    totals.nar += path.nar.length;
    totals.newNar += newNarBytes[i]!;
    totals.whole += added.whole[i]!;
    totals.cdc += added.cdc[i]!;
  }
  console.log(`total | | ${mb(totals.nar)} | ${mb(totals.newNar)} | ${mb(totals.whole)} | ${mb(totals.cdc)} (${((100 * totals.cdc) / totals.whole).toFixed(0)}%)`);
  const perNar = paths.map((p, i) => ({ nar: `${p.name}-${p.version}`, narBytes: p.path.nar.length, newNarBytes: newNarBytes[i], whole: added.whole[i], cdc: added.cdc[i] }));
  console.log(JSON.stringify({ compression, cdcSizes: values["cdc-sizes"], perNar, totals }));
} finally {
  await upstream.stop();
  await rm(work, { recursive: true, force: true });
}
