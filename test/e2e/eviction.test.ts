/** The real Nix client against an ncps capped below the closures it serves: every
 * substitution succeeds, the least recently used paths are evicted as new ones are stored,
 * an evicted path is fetched from the upstream again when asked, and storage stays under the
 * cap (every pass ends below it; on disk at the end). */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildClosure, createNixEnv, makeKeyPair, nixAvailable, publishCache, storePathHash, substitute, verifyStore, type NixEnv } from "../helpers/nix.ts";
import { startNcpsProcess, type NcpsProcess } from "../helpers/ncps.ts";
import { describeIf, testIf } from "../helpers/prereq.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const test = testIf(nixAvailable, "the real Nix (nix-bin) is needed for end-to-end tests");
const T = 120_000;
const KiB = 1024;
/** Each closure: 3 small paths and a 400 KiB one (uncompressed, so sizes are what they say). */
const BIG = 400 * KiB;
/** Room for one closure, not two. */
const CAP = 700 * KiB;

describeIf(nixAvailable)("e2e: a capped cache keeps serving closures larger than its cap", () => {
  let nix: NixEnv;
  let work: string;
  let up: Upstream;
  let ncps: NcpsProcess;
  let first: { paths: string[] };
  let second: { paths: string[] };

  beforeAll(async () => {
    nix = await createNixEnv();
    work = await mkdtemp(join(tmpdir(), "ncps-e2e-evict-"));
    const key = await makeKeyPair(nix, "e2e-evict-1");
    const store = nix.store("upstream");
    const seed = `evict-${Date.now()}`;
    first = await buildClosure(nix, store, { count: 3, bigBytes: BIG, seed: `${seed}-first` });
    second = await buildClosure(nix, store, { count: 3, bigBytes: BIG, seed: `${seed}-second` });
    await publishCache(nix, store, [...first.paths, ...second.paths], join(work, "up"), { compression: "none", key });
    up = await startUpstream(join(work, "up"));
    ncps = await startNcpsProcess({
      dataDir: join(work, "ncps"),
      args: ["--cache-upstream-url", up.url, "--cache-upstream-public-key", key.publicKey, "--cache-max-size", String(CAP)],
    });
  }, T);

  afterAll(async () => {
    await ncps?.stop();
    await up?.stop();
    await nix?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function narHits(path: string): Promise<number> {
    const url = /^URL: (.*)$/m.exec(await Bun.file(join(up.dir, `${storePathHash(path)}.narinfo`)).text())![1]!;
    return up.hits(`/${url}`);
  }

  function passes(): { before: number; after: number; nars: number }[] {
    return ncps.logs.flatMap((line) => {
      try {
        const rec = JSON.parse(line);
        return typeof rec.msg === "string" && rec.msg.startsWith("LRU eviction pass") ? [rec] : [];
      } catch {
        return [];
      }
    });
  }

  async function fetchInto(storeName: string, closure: { paths: string[] }) {
    const store = nix.store(storeName);
    const r = await substitute(nix, { from: ncps.url, paths: [closure.paths.at(-1)!], trustedKeys: [ncps.publicKey], store, timeoutMs: 60_000 });
    if (r.code !== 0 || r.stderr.includes("error:")) console.error(`ncps's log:\n${ncps.logs.join("\n")}`);
    expect(r.stderr).not.toContain("error:");
    expect(r.code).toBe(0);
    await verifyStore(nix, store, closure.paths, [ncps.publicKey]);
  }

  test("two closures, each under the cap and together over it, then the first again", async () => {
    await fetchInto("client-1", first);
    await fetchInto("client-2", second); // stores the second: the first, least recently used, goes
    await fetchInto("client-3", first); // the first comes back from the upstream
    const big = first.paths.find((p) => p.includes("ncps-big-"))!;
    expect(await narHits(big)).toBe(2);
    await ncps.stop(); // drains downloads and eviction, deletes evicted bytes
    const found = passes();
    expect(found.length).toBeGreaterThanOrEqual(2);
    for (const pass of found) {
      expect(pass.before).toBeGreaterThan(CAP);
      expect(pass.after).toBeLessThanOrEqual(CAP);
    }
    const dir = join(ncps.dataDir, "nar");
    let onDisk = 0;
    for (const f of await readdir(dir)) onDisk += (await stat(join(dir, f))).size;
    expect(onDisk).toBeLessThanOrEqual(CAP);
    expect(onDisk).toBeGreaterThan(BIG); // the closure served last is still there
  }, T);
});
