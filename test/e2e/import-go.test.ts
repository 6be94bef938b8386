/** The real Nix client after a switch from the Go ncps: a Go ncps deployment (the Go schema of
 * its main branch, 816f6378, on SQLite, and its storage layout) holding real NARs that Nix
 * wrote, imported with `ncps import-go`; then, with every upstream gone, Nix substitutes the
 * whole closure through ncps trusting only the key the Go ncps signed with. */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { formatPublicKey, generateSecretKey, signNarInfo, toPublicKey } from "../../src/nix/signature.ts";
import { createGoDeployment } from "../helpers/go-ncps.ts";
import { ncpsCommand, startNcpsProcess, type NcpsProcess } from "../helpers/ncps.ts";
import { buildClosure, createNixEnv, makeKeyPair, nixAvailable, publishCache, storePathHash, substitute, verifyStore, type NixEnv } from "../helpers/nix.ts";
import { describeIf, testIf } from "../helpers/prereq.ts";
import { startStoppedPort } from "../helpers/upstream-server.ts";

const test = testIf(nixAvailable, "the real Nix (nix-bin) is needed for end-to-end tests");
const T = 300_000;

describeIf(nixAvailable)("e2e: real Nix substitutes a Go ncps's content through ncps after import-go", () => {
  let nix: NixEnv;
  let work: string;
  let paths: string[];
  let ncps: NcpsProcess | undefined;
  const goKey = generateSecretKey("go-ncps-e2e-1");
  const goPublicKey = formatPublicKey(toPublicKey(goKey));

  beforeAll(async () => {
    nix = await createNixEnv();
    work = await mkdtemp(join(tmpdir(), "ncps-e2e-import-go-"));
    const upstreamKey = await makeKeyPair(nix, "e2e-upstream-1");
    const store = nix.store("upstream");
    const closure = await buildClosure(nix, store, { count: 5, bigBytes: 4 * 1024 * 1024, seed: `import-go-${Date.now()}` });
    paths = closure.paths;
    // what the Go ncps fetched from its upstream: narinfos and NARs Nix wrote (xz), each
    // narinfo signed by the upstream and by the Go ncps
    const cache = join(work, "upstream-cache");
    await publishCache(nix, store, paths, cache, { compression: "xz", key: upstreamKey });
    const go = await createGoDeployment({
      version: "816f6378",
      dialect: "sqlite",
      databaseUrl: `sqlite:${join(work, "go", "db", "db.sqlite")}`,
      storageDir: join(work, "go", "data"),
      secretKey: goKey,
    });
    try {
      for (const path of paths) {
        const narinfo = parseNarInfo(await Bun.file(join(cache, `${storePathHash(path)}.narinfo`)).text());
        const file = new Uint8Array(await Bun.file(join(cache, narinfo.url)).arrayBuffer());
        await go.add(signNarInfo(narinfo, goKey), file);
      }
    } finally {
      await go.close();
    }
  }, T);

  afterAll(async () => {
    await ncps?.stop();
    await nix?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test("import-go, then nix copy --from ncps of the whole closure trusting only the Go ncps's key", async () => {
    const dataDir = join(work, "ncps");
    const stopped = (await startStoppedPort()).url;
    const ours = ["--cache-storage-local", dataDir, "--cache-temp-path", join(dataDir, "tmp"), "--cache-hostname", "ncps-test", "--cache-upstream-url", stopped];
    const proc = Bun.spawn(
      [...ncpsCommand(), "import-go", "--from-cache-database-url", `sqlite:${join(work, "go", "db", "db.sqlite")}`, "--from-cache-storage-local", join(work, "go", "data"), ...ours],
      { stdout: "pipe", stderr: "pipe", env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" } },
    );
    const [stdout, stderr, status] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    expect(stderr).not.toContain('"level":"warn"');
    expect(status).toBe(0);
    expect(stdout).toMatch(new RegExp(`^imported\\s+${paths.length} `, "m"));

    ncps = await startNcpsProcess({ dataDir, args: ["--cache-upstream-url", stopped] });
    expect(ncps.publicKey).toBe(goPublicKey);
    const client = nix.store("client");
    const r = await substitute(nix, { from: ncps.url, paths: [paths.at(-1)!], trustedKeys: [goPublicKey], store: client });
    expect(r.stderr).not.toContain("error:");
    expect(r.code).toBe(0);
    await verifyStore(nix, client, paths, [goPublicKey]);
  }, T);
});
