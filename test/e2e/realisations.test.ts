/** Content-addressed derivations with the real Nix (2.8, ca-derivations): a builder copies
 * outputs and realisations to ncps, a machine that may not build (--max-jobs 0) gets the
 * derivation's outputs through ncps by its realisations; and ncps fetches realisations from
 * an upstream binary cache that Nix wrote. */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseRealisation, parseRealisationFileName, trustedRealisationSignatures } from "../../src/nix/realisation.ts";
import { parsePublicKey } from "../../src/nix/signature.ts";
import { startNcpsProcess, type NcpsProcess } from "../helpers/ncps.ts";
import { buildCaClosure, caDerivationsConf, createNixEnv, makeKeyPair, nixAvailable, verifyStore, type BuiltCaClosure, type KeyPair, type NixEnv } from "../helpers/nix.ts";
import { describeIf, testIf } from "../helpers/prereq.ts";
import { startStoppedPort, startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const test = testIf(nixAvailable, "the real Nix (nix-bin) is needed for end-to-end tests");
const T = 300_000;
const ca = { extraConf: caDerivationsConf };

describeIf(nixAvailable)("e2e: realisations of CA derivations through ncps", () => {
  let nix: NixEnv;
  let work: string;
  let builderKey: KeyPair;
  let upstreamKey: KeyPair;
  const started: NcpsProcess[] = [];
  const upstreams: Upstream[] = [];

  beforeAll(async () => {
    nix = await createNixEnv();
    work = await mkdtemp(join(tmpdir(), "ncps-realisations-e2e-"));
    builderKey = await makeKeyPair(nix, "builder-1");
    upstreamKey = await makeKeyPair(nix, "upstream-1");
  }, T);

  afterAll(async () => {
    for (const n of started) await n.stop();
    for (const u of upstreams) await u.stop();
    await nix?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  async function startNcps(args: string[]): Promise<NcpsProcess> {
    const ncps = await startNcpsProcess({ args });
    started.push(ncps);
    return ncps;
  }

  /** The names of the keys among `keys` whose signatures on ncps's realisation verify. */
  async function signersOf(ncps: NcpsProcess, id: string, keys: string[], prefix = "") {
    const res = await fetch(`${ncps.url}${prefix}/realisations/${id}.doi`);
    expect([id, res.status]).toEqual([id, 200]);
    const r = parseRealisation(await res.text(), parseRealisationFileName(`${id}.doi`));
    return trustedRealisationSignatures(r, keys.map(parsePublicKey)).map((s) => s.slice(0, s.indexOf(":"))).sort();
  }

  /** `nix-build` of the CA derivation into a fresh store that may not build anything: its
   * outputs can only come from `substituter`, by way of their realisations. */
  async function substituteWithoutBuilding(built: BuiltCaClosure, substituter: string, trustedKey: string, store: string) {
    const result = await nix.run(
      [
        "nix-build", "--store", store, "--no-out-link", "--max-jobs", "0", built.exprFile,
        "--option", "substituters", substituter, "--option", "trusted-public-keys", trustedKey,
      ],
      { ...ca, allowFail: true },
    );
    expect([result.code, result.stderr.slice(-2000)]).toEqual([0, expect.any(String)]);
    expect(result.stderr).not.toContain("building '");
    expect(result.stdout.trim()).toBe(built.paths[1]!);
    await verifyStore(nix, store, built.paths);
    const info = await nix.run(["nix", "realisation", "info", "--store", store, "--file", built.exprFile, "--json"], ca);
    return JSON.parse(info.stdout) as { id: string; outPath: string; signatures: string[] }[];
  }

  for (const prefix of ["", "/upload"]) {
    test(`nix copy --to ncps${prefix} records the realisations, and a store that cannot build substitutes the derivation through ncps`, async () => {
      const down = await startStoppedPort();
      const ncps = await startNcps([
        "--cache-upstream-url", down.url,
        "--cache-upstream-public-key", "nobody-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
        "--cache-allow-put-verb",
      ]);
      const builder = nix.store(`builder${prefix.replace("/", "-")}`);
      const built = await buildCaClosure(nix, builder, { key: builderKey, seed: `copy${prefix}-${Date.now()}` });
      const copy = await nix.run(["nix", "copy", "--store", builder, "--to", `${ncps.url}${prefix}`, "--file", built.exprFile], { ...ca, allowFail: true });
      expect([copy.code, copy.stderr.slice(-2000)]).toEqual([0, expect.any(String)]);
      for (const id of built.ids) {
        expect(await signersOf(ncps, id, [builderKey.publicKey, ncps.publicKey], prefix)).toEqual(["builder-1", "ncps-test"]);
      }
      const [top] = await substituteWithoutBuilding(built, ncps.url, ncps.publicKey, nix.store(`fresh${prefix.replace("/", "-")}`));
      expect(top!.id).toBe(built.ids[1]!);
      expect(top!.signatures.some((s) => s.startsWith("ncps-test:"))).toBe(true);
    }, T);
  }

  test("--cache-require-trusted-signature: Nix's copy of realisations signed by a trusted builder is accepted, by another key refused (403)", async () => {
    const down = await startStoppedPort();
    const ncps = await startNcps([
      "--cache-upstream-url", down.url,
      "--cache-upstream-public-key", "nobody-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
      "--cache-allow-put-verb",
      "--cache-require-trusted-signature",
      "--cache-trusted-upload-key", builderKey.publicKey,
    ]);
    const stranger = await makeKeyPair(nix, "stranger-1");
    for (const [realisationKey, expected] of [[builderKey, 0], [stranger, 1]] as const) {
      const builder = nix.store(`strict-builder-${realisationKey.name}`);
      const built = await buildCaClosure(nix, builder, { key: realisationKey, seed: `strict-${realisationKey.name}-${Date.now()}` });
      // the narinfos carry the trusted builder's signature either way: only the realisations differ
      await nix.run(["nix", "store", "sign", "--store", builder, "--key-file", builderKey.secretKeyFile, ...built.paths], ca);
      const copy = await nix.run(["nix", "copy", "--store", builder, "--to", ncps.url, "--file", built.exprFile], { ...ca, allowFail: true });
      expect([realisationKey.name, copy.code === 0 ? 0 : 1]).toEqual([realisationKey.name, expected]);
      if (expected === 1) expect(copy.stderr).toContain("HTTP error 403");
      for (const id of built.ids) {
        const res = await fetch(`${ncps.url}/realisations/${id}.doi`);
        expect([realisationKey.name, res.status]).toEqual([realisationKey.name, expected === 0 ? 200 : 404]);
      }
    }
  }, T);

  test("ncps fetches realisations from an upstream binary cache Nix wrote (nix copy --to file://), keeps and re-signs them", async () => {
    const upBuilder = nix.store("upstream-builder");
    const built = await buildCaClosure(nix, upBuilder, { key: upstreamKey, seed: `pull-${Date.now()}` });
    const dir = join(work, "upstream-cache");
    // the narinfos need the upstream's signature too (ncps trusts only signed narinfos)
    await nix.run(["nix", "store", "sign", "--store", upBuilder, "--key-file", upstreamKey.secretKeyFile, ...built.paths], ca);
    await nix.run(["nix", "copy", "--store", upBuilder, "--to", `file://${dir}?compression=zstd`, "--file", built.exprFile], ca);
    expect((await readdir(join(dir, "realisations"))).sort()).toEqual(built.ids.map((id) => `${id}.doi`).sort());
    const upstream = await startUpstream(dir);
    upstreams.push(upstream);
    const ncps = await startNcps(["--cache-upstream-url", upstream.url, "--cache-upstream-public-key", upstreamKey.publicKey]);

    const realised = await substituteWithoutBuilding(built, ncps.url, ncps.publicKey, nix.store("fresh-pull"));
    expect(realised[0]!.signatures.sort().map((s) => s.slice(0, s.indexOf(":")))).toEqual(["ncps-test", "upstream-1"]);
    for (const id of built.ids) {
      // held now: /upload/ answers from what ncps holds only
      expect(await signersOf(ncps, id, [upstreamKey.publicKey, ncps.publicKey], "/upload")).toEqual(["ncps-test", "upstream-1"]);
      expect(upstream.hits(`/realisations/${id}.doi`)).toBe(1);
    }
  }, T);
});
