/** `ncps migrate-nar-to-chunks` and `ncps migrate-chunks-to-nar` on a store of mixed NARs
 * (two named uncompressed, one named zstd): a dry run changes nothing; an interrupted run is
 * finished by the next; every NAR still serves its NarHash after each direction. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { narsToChunks } from "../../src/cache/cdc-migration.ts";
import { defaultChunkSizes } from "../../src/cache/chunker.ts";
import { HotNarInfos } from "../../src/cache/hot-narinfos.ts";
import { StoredNars } from "../../src/cache/stored-nars.ts";
import type { RunningNcps } from "../../src/compose.ts";
import { SqliteMetadataStore } from "../../src/db/sqlite.ts";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { LocalBlobStore } from "../../src/storage/local.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { ncpsCommand, startInProcess } from "../helpers/ncps.ts";
import { makeSyntheticCache, sha256Nix32, type SyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";
import { pseudoRandom } from "../helpers/pseudo-random.ts";

let work: string;
let data: string;
let syn: SyntheticCache;
let upstream: Upstream;
let paths: SyntheticPath[];

const dbUrl = () => `sqlite:${join(data, "db.sqlite")}`;
const start = (): Promise<RunningNcps> =>
  startInProcess(data, { "cache-upstream-url": [upstream.url], "cache-upstream-public-key": [syn.publicKey], "cache-database-url": dbUrl() });

async function servesAll(): Promise<void> {
  const ncps = await start();
  try {
    for (const p of paths) {
      const narinfo = parseNarInfo(await (await fetch(`${ncps.url}/${p.hash}.narinfo`)).text());
      const res = await fetch(`${ncps.url}/${narinfo.url}`, { headers: { "accept-encoding": "identity" }, decompress: false });
      const body = new Uint8Array(await res.arrayBuffer());
      const nar = narinfo.compression === "zstd" ? Bun.zstdDecompressSync(body) : body;
      expect(sha256Nix32(nar)).toBe(p.narinfo.narHash);
    }
    await ncps.cache.drain();
  } finally {
    await ncps.stop();
  }
}

function cli(command: string, ...args: string[]) {
  const r = Bun.spawnSync([...ncpsCommand(), command, "--cache-storage-local", data, "--cache-database-url", dbUrl(), "--cache-temp-path", join(work, "tmp"), ...args], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

const narFiles = async () => (await readdir(join(data, "nar")).catch(() => [])).sort();
const chunkCount = async () => (await Promise.all((await readdir(join(data, "chunk")).catch(() => [])).map((d) => readdir(join(data, "chunk", d))))).flat().length;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-cdc-migrate-"));
  data = join(work, "data");
  syn = await makeSyntheticCache(join(work, "upstream"));
  const base = pseudoRandom(600_000, 7);
  paths = [
    await syn.add("a", { nar: base, compression: "none" }),
    await syn.add("b", { nar: Buffer.concat([base.subarray(0, 300_000), pseudoRandom(999, 3), base.subarray(300_000)]), compression: "none" }),
    await syn.add("c", { nar: pseudoRandom(200_000, 9), compression: "zstd" }),
  ];
  upstream = await startUpstream(syn.dir);
  await Bun.write(join(work, "tmp", ".keep"), "");
  await servesAll(); // stored whole, CDC never enabled
});

afterAll(async () => {
  await upstream?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test("migrate-nar-to-chunks: a dry run changes nothing", async () => {
  const before = await narFiles();
  const r = cli("migrate-nar-to-chunks", "--dry-run");
  expect(r.err).not.toContain("rror");
  expect(r.code).toBe(0);
  expect(r.out).toBe("would convert 2, already chunked 0, kept as they are 1, failed 0\n");
  expect(await narFiles()).toEqual(before);
  expect(await chunkCount()).toBe(0);
});

test("migrate-nar-to-chunks: interrupted after one NAR, then run again, converts the NARs named uncompressed, each verified", async () => {
  const db = new SqliteMetadataStore(join(data, "db.sqlite"));
  const store = new LocalBlobStore(data);
  let leftover = "";
  try {
    const nars = new StoredNars({ db, store, hot: new HotNarInfos(), logger: silentLogger });
    const interrupted = narsToChunks({
      db, store, nars, sizes: defaultChunkSizes, tempDir: join(work, "tmp"), dryRun: false, concurrency: 1, logger: silentLogger,
      progress: (done) => {
        if (done === 1) throw new Error("interrupted");
      },
    });
    await expect(interrupted).rejects.toThrow("interrupted");
    const chunked = (await db.listNars(10)).filter((r) => r.chunked);
    expect(chunked).toHaveLength(1);
    // as if it had died between recording the chunks and removing the whole file
    leftover = join(data, chunked[0]!.key);
    await writeFile(leftover, "left over");
  } finally {
    await db.close();
  }
  const r = cli("migrate-nar-to-chunks", "--concurrency", "2");
  expect(r.code).toBe(0);
  expect(r.out).toBe("converted 1, already chunked 1, kept as they are 1, failed 0\n");
  expect(await Bun.file(leftover).exists()).toBe(false);
  expect((await narFiles()).filter((f) => f.endsWith(".nar"))).toEqual([]);
  expect((await narFiles()).filter((f) => f.endsWith(".nar.zst"))).toHaveLength(1);
  expect(await chunkCount()).toBeGreaterThan(0);
  await servesAll();
  expect(cli("migrate-nar-to-chunks").out).toBe("converted 0, already chunked 2, kept as they are 1, failed 0\n");
}, 60_000);

test("migrate-chunks-to-nar: every chunked NAR is whole again and serves its NarHash", async () => {
  expect(cli("migrate-chunks-to-nar", "--dry-run").out).toBe("would convert 2, already whole 1, kept as they are 0, failed 0\n");
  const r = cli("migrate-chunks-to-nar");
  expect(r.code).toBe(0);
  expect(r.out).toBe("converted 2, already whole 1, kept as they are 0, failed 0\n");
  expect((await narFiles()).filter((f) => f.endsWith(".nar"))).toHaveLength(2);
  await servesAll();
  expect(cli("migrate-chunks-to-nar").out).toBe("converted 0, already whole 3, kept as they are 0, failed 0\n");
}, 60_000);
