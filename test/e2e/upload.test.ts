/** `nix copy --to` ncps with the real Nix: builders push, other machines substitute. */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNcpsProcess, type NcpsProcess } from "../helpers/ncps.ts";
import { buildClosure, createNixEnv, makeKeyPair, nixAvailable, storePathHash, substitute, verifyStore, type BuiltClosure, type KeyPair, type NixEnv } from "../helpers/nix.ts";
import { describeIf, testIf } from "../helpers/prereq.ts";
import { startStoppedPort } from "../helpers/upstream-server.ts";

const test = testIf(nixAvailable, "the real Nix (nix-bin) is needed for end-to-end tests");
const T = 300_000;

describeIf(nixAvailable)("e2e: nix copy --to ncps", () => {
  let nix: NixEnv;
  let work: string;
  let clientKey: KeyPair;
  let otherKey: KeyPair;
  let built: BuiltClosure;
  let builder: string;
  const started: NcpsProcess[] = [];

  async function startNcps(extra: string[]): Promise<NcpsProcess> {
    const down = await startStoppedPort();
    const ncps = await startNcpsProcess({
      args: [
        "--cache-upstream-url", down.url,
        "--cache-upstream-public-key", "nobody-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
        "--cache-allow-put-verb",
        ...extra,
      ],
    });
    started.push(ncps);
    return ncps;
  }

  beforeAll(async () => {
    nix = await createNixEnv();
    work = await mkdtemp(join(tmpdir(), "ncps-upload-"));
    clientKey = await makeKeyPair(nix, "builder-1");
    otherKey = await makeKeyPair(nix, "stranger-1");
    builder = nix.store("builder");
    // two new paths, one of several MB
    built = await buildClosure(nix, builder, { count: 1, bigBytes: 6 * 1024 * 1024, seed: `upload-${Date.now()}` });
    await nix.run(["nix", "store", "sign", "--store", builder, "--key-file", clientKey.secretKeyFile, "--recursive", ...built.paths]);
  }, T);

  afterAll(async () => {
    for (const n of started) await n.stop();
    await nix?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  const storedNars = async (dataDir: string) => (await readdir(join(dataDir, "nar")).catch(() => [] as string[])).sort();
  const servedNarInfos = (url: string) =>
    Promise.all(built.paths.map(async (path) => (await fetch(`${url}/${storePathHash(path)}.narinfo`)).text()));

  const copyTo = (url: string, extra: string[] = []) =>
    nix.run(["nix", "copy", "--store", builder, "--to", url, ...extra, ...built.paths], { allowFail: true });

  test("a builder pushes with nix copy --to; a fresh store trusting only ncps substitutes and verifies; pushing again changes nothing", async () => {
    const ncps = await startNcps([]);
    const pushed = await copyTo(ncps.url);
    expect(pushed.stderr).not.toContain("error:");
    expect(pushed.code).toBe(0);
    const store = nix.store("consumer");
    const r = await substitute(nix, { from: ncps.url, paths: [built.top], trustedKeys: [ncps.publicKey], store });
    expect(r.code).toBe(0);
    await verifyStore(nix, store, built.paths, [ncps.publicKey]);
    // the builder's own signature was kept next to ncps's
    const narinfo = await (await fetch(`${ncps.url}/${storePathHash(built.top)}.narinfo`)).text();
    expect(narinfo).toContain("Sig: builder-1:");
    // Pushing the same paths again: Nix 2.8 finds their narinfos and PUTs nothing (checked with
    // -vvvv), so this proves the push succeeds and leaves served narinfos and stored NARs as they were.
    const narInfosBefore = await servedNarInfos(ncps.url);
    const narsBefore = await storedNars(ncps.dataDir);
    expect(narsBefore.length).toBe(built.paths.length);
    const again = await copyTo(ncps.url);
    expect(again.stderr).not.toContain("error:");
    expect(again.code).toBe(0);
    expect(await servedNarInfos(ncps.url)).toEqual(narInfosBefore);
    expect(await storedNars(ncps.dataDir)).toEqual(narsBefore);
  }, T);

  test("with --cache-require-trusted-signature the listed key works, an unlisted key gets 403 and nothing is stored", async () => {
    const trusting = await startNcps(["--cache-require-trusted-signature", "--cache-trusted-upload-key", clientKey.publicKey]);
    expect((await copyTo(trusting.url)).code).toBe(0);
    const store = nix.store("consumer-trusted");
    expect((await substitute(nix, { from: trusting.url, paths: [built.top], trustedKeys: [trusting.publicKey], store })).code).toBe(0);

    const strict = await startNcps(["--cache-require-trusted-signature", "--cache-trusted-upload-key", otherKey.publicKey]);
    const refused = await copyTo(strict.url);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("403");
    for (const path of built.paths) {
      expect((await fetch(`${strict.url}/${storePathHash(path)}.narinfo`)).status).toBe(404);
    }
    // Nix PUTs each NAR before its narinfo: a refused narinfo must not leave its NAR behind.
    expect(await storedNars(strict.dataDir)).toEqual([]);
  }, T);

  test("build logs: nix store copy-log --to ncps, then nix log reads it back", async () => {
    const ncps = await startNcps([]);
    // `nix log` finds the derivation through the path's narinfo, so push the path too
    expect((await copyTo(ncps.url)).code).toBe(0);
    const drv = (await nix.run(["nix-store", "--store", builder, "--query", "--deriver", built.top])).stdout.trim();
    const copied = await nix.run(["nix", "store", "copy-log", "--store", builder, "--to", ncps.url, built.top], { allowFail: true });
    expect(copied.stderr).not.toContain("error:");
    expect(copied.code).toBe(0);
    const original = await nix.run(["nix", "log", "--store", builder, built.top]);
    const read = await nix.run(["nix", "log", "--store", ncps.url, built.top], { allowFail: true });
    expect(read.stderr).not.toContain("error:");
    expect(read.code).toBe(0);
    expect(read.stdout).toBe(original.stdout);
    // the builders here print nothing, so also check a log with content round-trips
    const logUrl = `${ncps.url}/log/${drv.slice("/nix/store/".length)}`;
    const text = "building ncps-p0\nline two\n";
    expect((await fetch(logUrl, { method: "PUT", body: text })).status).toBe(201);
    const again = await nix.run(["nix", "log", "--store", ncps.url, built.top]);
    expect(again.stdout).toBe(text);
    expect((await fetch(`${ncps.url}/log/${drv.slice("/nix/store/".length, -4)}.nope`)).status).toBe(400);
  }, T);

  test("/upload is a binary cache of its own: nix copy --to and nix store copy-log --to .../upload, read back by nix log there and substituted from the root", async () => {
    const ncps = await startNcps([]);
    const upload = `${ncps.url}/upload`;
    const info = await fetch(`${upload}/nix-cache-info`);
    expect(info.status).toBe(200);
    expect(await info.text()).toBe(await (await fetch(`${ncps.url}/nix-cache-info`)).text());
    expect((await (await fetch(`${upload}/pubkey`)).text()).trim()).toBe(ncps.publicKey);
    const pushed = await copyTo(upload);
    expect(pushed.stderr).not.toContain("error:");
    expect(pushed.code).toBe(0);
    expect((await storedNars(ncps.dataDir)).length).toBe(built.paths.length);
    const copied = await nix.run(["nix", "store", "copy-log", "--store", builder, "--to", upload, built.top], { allowFail: true });
    expect(copied.stderr).not.toContain("error:");
    expect(copied.code).toBe(0);
    const drv = (await nix.run(["nix-store", "--store", builder, "--query", "--deriver", built.top])).stdout.trim();
    const text = "built through /upload\n";
    expect((await fetch(`${upload}/log/${drv.slice("/nix/store/".length)}`, { method: "PUT", body: text })).status).toBe(201);
    for (const store of [upload, ncps.url]) {
      const read = await nix.run(["nix", "log", "--store", store, built.top], { allowFail: true });
      expect([store, read.code, read.stdout]).toEqual([store, 0, text]);
    }
    const consumer = nix.store("consumer-upload");
    const r = await substitute(nix, { from: ncps.url, paths: [built.top], trustedKeys: [ncps.publicKey], store: consumer });
    expect(r.code).toBe(0);
    await verifyStore(nix, consumer, built.paths, [ncps.publicKey]);
  }, T);
});
