/** Uncompressed NARs with the real Nix (issue 16): from an upstream that serves them as they
 * are (compression=none) and from `nix copy --to` with compression=none, ncps stores them
 * zstd-compressed, and Nix substitutes and verifies them. */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "../helpers/eventually.ts";
import { startNcpsProcess, type NcpsProcess } from "../helpers/ncps.ts";
import { buildClosure, createNixEnv, makeKeyPair, nixAvailable, publishCache, substitute, verifyStore, type BuiltClosure, type KeyPair, type NixEnv } from "../helpers/nix.ts";
import { describeIf, testIf } from "../helpers/prereq.ts";
import { startStoppedPort, startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const test = testIf(nixAvailable, "the real Nix (nix-bin) is needed for end-to-end tests");
const T = 300_000;
const MB = 1024 * 1024;

describeIf(nixAvailable)("e2e: uncompressed NARs are stored zstd-compressed", () => {
  let nix: NixEnv;
  let work: string;
  let key: KeyPair;
  let built: BuiltClosure;
  let builder: string;
  let upstream: Upstream;
  const started: NcpsProcess[] = [];

  beforeAll(async () => {
    nix = await createNixEnv();
    work = await mkdtemp(join(tmpdir(), "ncps-zstd-e2e-"));
    key = await makeKeyPair(nix, "builder-1");
    builder = nix.store("builder");
    built = await buildClosure(nix, builder, { count: 3, bigBytes: 32 * MB, bigFrom: "usr-bin", seed: `zstd-${Date.now()}` });
    await publishCache(nix, builder, built.paths, join(work, "plain"), { compression: "none", key });
    upstream = await startUpstream(join(work, "plain"));
  }, T);

  afterAll(async () => {
    for (const n of started) await n.stop();
    await upstream?.stop();
    await nix?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function start(args: string[]): Promise<NcpsProcess> {
    const ncps = await startNcpsProcess({ args });
    started.push(ncps);
    return ncps;
  }

  async function storedBytes(dataDir: string): Promise<number> {
    let total = 0;
    for (const name of await readdir(join(dataDir, "nar"))) total += (await stat(join(dataDir, "nar", name))).size;
    return total;
  }

  /** Body bytes ncps sent for GETs of NARs, from its access log. */
  function narBytesSent(ncps: NcpsProcess): number {
    return ncps.logs
      .map((l) => { try { return JSON.parse(l); } catch { return null; } })
      .filter((r) => r?.msg === "request" && r.method === "GET" && String(r.path).includes("/nar/"))
      .reduce((sum, r) => sum + Number(r.bytes ?? 0), 0);
  }

  test("from an upstream: stored compressed, substituted and verified by Nix, sent to it zstd-encoded", async () => {
    const ncps = await start(["--cache-upstream-url", upstream.url, "--cache-upstream-public-key", key.publicKey]);
    const cold = await substitute(nix, { from: ncps.url, paths: [built.top], trustedKeys: [ncps.publicKey], store: nix.store("cold") });
    expect(cold.code).toBe(0);
    // Nix has every byte before ncps has compressed and stored the NARs
    const stored = () => ncps.logs.filter((l) => l.includes('"NAR stored"')).length;
    await eventually("every NAR stored", () => stored() === built.paths.length, { deadlineMs: 120_000, explain: () => `${stored()} of ${built.paths.length}` });
    const narBytes = (await readdir(join(work, "plain", "nar"))).length;
    expect(narBytes).toBe(built.paths.length);
    const plainBytes = await storedBytes(join(work, "plain"));
    expect(await storedBytes(ncps.dataDir)).toBeLessThan(plainBytes / 2);

    const sentBefore = narBytesSent(ncps);
    const warm = await substitute(nix, { from: ncps.url, paths: [built.top], trustedKeys: [ncps.publicKey], store: nix.store("warm") });
    expect(warm.code).toBe(0);
    await verifyStore(nix, nix.store("warm"), built.paths, [ncps.publicKey]);
    // Nix's curl accepts zstd: the warm copy went as stored
    expect(narBytesSent(ncps) - sentBefore).toBeLessThan(plainBytes / 2);
  }, T);

  test("from nix copy --to with compression=none: stored compressed, substituted and verified", async () => {
    const down = await startStoppedPort();
    const ncps = await start(["--cache-upstream-url", down.url, "--cache-upstream-public-key", key.publicKey, "--cache-allow-put-verb"]);
    const pushed = await nix.run(["nix", "copy", "--store", builder, "--to", `${ncps.url}/upload?compression=none`, ...built.paths], { allowFail: true });
    expect(pushed.stderr).not.toContain("error:");
    expect(pushed.code).toBe(0);
    expect(await storedBytes(ncps.dataDir)).toBeLessThan((await storedBytes(join(work, "plain"))) / 2);
    const store = nix.store("from-upload");
    const r = await substitute(nix, { from: ncps.url, paths: [built.top], trustedKeys: [ncps.publicKey], store });
    expect(r.code).toBe(0);
    await verifyStore(nix, store, built.paths, [ncps.publicKey]);
  }, T);
});
