/** Shared end-to-end suite: the real Nix client substitutes through ncps (run as users run it: `ncps serve`, or the
 * compiled binary named by NCPS_BIN), trusting only ncps's key; then the upstreams go away
 * and a fresh store still gets everything from ncps alone. */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildClosure, createNixEnv, makeKeyPair, nixAvailable, publishCache, storePathHash, substitute, verifyStore, type NixEnv } from "./nix.ts";
import { startNcpsProcess, type NcpsProcess } from "./ncps.ts";
import { describeIf, testIf } from "./prereq.ts";
import { createTestDatabase, testServer, type ServerDialect, type TestDatabase } from "./server-databases.ts";
import { startStoppedPort, startUpstream, type Upstream } from "./upstream-server.ts";

const test = testIf(nixAvailable, "the real Nix (nix-bin) is needed for end-to-end tests");
const T = 300_000;

/** Runs the suite against an ncps started with `extraArgs` (a database URL, S3 storage...),
 * so every backend combination is proven with the same real-client scenario. */
export function describeSubstitution(name: string, extraArgs: () => Promise<string[]> | string[] = () => []) {
  describeIf(nixAvailable)(name, () => {
    let nix: NixEnv;
    let work: string;
    let big: { paths: string[]; big?: string };
    let small: { paths: string[] };
    let zstdUp: Upstream;
    let xzUp: Upstream;
    let ncps: NcpsProcess;

    beforeAll(async () => {
      nix = await createNixEnv();
      work = await mkdtemp(join(tmpdir(), "ncps-e2e-"));
      const key = await makeKeyPair(nix, "e2e-upstream-1");
      const store = nix.store("upstream");
      const seed = `${name}-${Date.now()}`;
      big = await buildClosure(nix, store, { count: 10, bigBytes: 100 * 1024 * 1024, seed: `${seed}-big` });
      small = await buildClosure(nix, store, { count: 4, seed: `${seed}-small` });
      await publishCache(nix, store, big.paths, join(work, "zstd"), { compression: "zstd", key });
      await publishCache(nix, store, small.paths, join(work, "xz"), { compression: "xz", key });
      zstdUp = await startUpstream(join(work, "zstd"));
      xzUp = await startUpstream(join(work, "xz"));
      const down = await startStoppedPort();
      ncps = await startNcpsProcess({
        dataDir: join(work, "ncps"),
        args: [
          "--cache-upstream-url", down.url,
          "--cache-upstream-url", zstdUp.url,
          "--cache-upstream-url", xzUp.url,
          "--cache-upstream-public-key", key.publicKey,
          ...(await extraArgs()),
        ],
      });
    }, T);

    afterAll(async () => {
      await ncps?.stop();
      await Promise.all([zstdUp?.stop(), xzUp?.stop()]);
      await nix?.cleanup();
      await rm(work, { recursive: true, force: true });
    });

    test("nix copy --from ncps: a 10-path closure with a 100 MB NAR, trusting only ncps's key", async () => {
      const store = nix.store("client-copy");
      const r = await substitute(nix, { from: ncps.url, paths: [big.paths.at(-1)!], trustedKeys: [ncps.publicKey], store });
      expect(r.stderr).not.toContain("error:");
      expect(r.code).toBe(0);
      await verifyStore(nix, store, big.paths, [ncps.publicKey]);
      // every NAR crossed the "internet" once
      for (const path of big.paths) {
        const url = /^URL: (.*)$/m.exec(await Bun.file(join(zstdUp.dir, `${storePathHash(path)}.narinfo`)).text())![1]!;
        expect(zstdUp.hits(`/${url}`)).toBe(1);
      }
    }, T);

    test("nix-store --realise with ncps as the only substituter", async () => {
      const store = nix.store("client-realise");
      const r = await substitute(nix, { from: ncps.url, paths: [small.paths.at(-1)!], trustedKeys: [ncps.publicKey], store, mode: "realise" });
      expect(r.code).toBe(0);
      await verifyStore(nix, store, small.paths, [ncps.publicKey]);
    }, T);

    test("a client that does not trust ncps's key refuses its paths", async () => {
      const store = nix.store("client-untrusting");
      const r = await substitute(nix, { from: ncps.url, paths: [small.paths[0]!], trustedKeys: ["someone-else-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="], store });
      expect(r.code).not.toBe(0);
      // Refused for the signature (Nix 2.8's wording), not for some other failure.
      expect(r.stderr).toContain(`cannot add path '${small.paths[0]!}' because it lacks a valid signature`);
    }, T);

    test("with every upstream stopped, a fresh store gets everything from ncps alone", async () => {
      await zstdUp.stop();
      await xzUp.stop();
      const store = nix.store("client-offline");
      const r = await substitute(nix, { from: ncps.url, paths: [big.paths.at(-1)!, small.paths.at(-1)!], trustedKeys: [ncps.publicKey], store });
      expect(r.code).toBe(0);
      await verifyStore(nix, store, [...big.paths, ...small.paths], [ncps.publicKey]);
    }, T);
  });
}


/** The scenario with ncps keeping its metadata in a fresh PostgreSQL or MariaDB database,
 * then a check that the narinfos really landed there. */
export async function describeSubstitutionOnServerDatabase(dialect: ServerDialect, label: string) {
  const name = `e2e: real Nix substitutes through ncps (${dialect}, local storage)`;
  const server = await testServer(dialect);
  let db: TestDatabase | undefined;
  if (server.url === null) {
    testIf(false, `${name}: ${server.problem}`)(name, () => {});
    return;
  }
  const serverUrl = server.url;
  describeSubstitution(name, async () => {
    db = await createTestDatabase(serverUrl);
    return ["--cache-database-url", db.url];
  });
  testIf(nixAvailable, "the real Nix (nix-bin) is needed for end-to-end tests")(`ncps kept the narinfos of the scenario in ${label}`, async () => {
    const [row] = await db!.query<{ n: number | string }>("SELECT count(*) AS n FROM narinfos");
    expect(Number(row!.n)).toBeGreaterThanOrEqual(14); // the 10-path and the 4-path closures
  });
  afterAll(async () => {
    await db?.drop();
  });
}
