/** Tokens as the real Nix client presents them: credentials from a netrc file, which curl
 * sends as HTTP Basic. */
import { afterAll, beforeAll, expect } from "bun:test";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startNcpsProcess, type NcpsProcess } from "../helpers/ncps.ts";
import { buildClosure, createNixEnv, makeKeyPair, nixAvailable, storePathHash, verifyStore, type NixEnv } from "../helpers/nix.ts";
import { describeIf, testIf } from "../helpers/prereq.ts";
import { startStoppedPort } from "../helpers/upstream-server.ts";

const test = testIf(nixAvailable, "the real Nix (nix-bin) is needed for end-to-end tests");
const T = 300_000;

describeIf(nixAvailable)("e2e: tokens through the Nix client's netrc", () => {
  let nix: NixEnv;
  let ncps: NcpsProcess;
  let built: { paths: string[]; top: string };
  let builder: string;
  let netrc: string;
  let wrongNetrc: string;

  beforeAll(async () => {
    nix = await createNixEnv();
    const key = await makeKeyPair(nix, "builder-1");
    builder = nix.store("builder");
    built = await buildClosure(nix, builder, { count: 2, seed: `auth-${Date.now()}` });
    await nix.run(["nix", "store", "sign", "--store", builder, "--key-file", key.secretKeyFile, "--recursive", ...built.paths]);
    const down = await startStoppedPort();
    ncps = await startNcpsProcess({
      args: [
        "--cache-upstream-url", down.url,
        "--cache-upstream-public-key", key.publicKey,
        "--cache-allow-put-verb",
        "--cache-get-token", "read-token",
        "--cache-put-token", "write-token",
      ],
    });
    const host = new URL(ncps.url).hostname;
    netrc = join(nix.root, "netrc");
    wrongNetrc = join(nix.root, "netrc-wrong");
    await writeFile(netrc, `machine ${host} login nix password write-token\n`);
    await writeFile(wrongNetrc, `machine ${host} login nix password nope\n`);
  }, T);

  afterAll(async () => {
    await ncps?.stop();
    await nix?.cleanup();
  });

  test("nix copy --to with the put token in netrc works; without it ncps answers 401", async () => {
    const copy = (netrcFile: string) =>
      nix.run(["nix", "copy", "--store", builder, "--to", ncps.url, "--option", "netrc-file", netrcFile, ...built.paths], { allowFail: true });
    const refused = await copy(wrongNetrc);
    expect(refused.code).not.toBe(0); // Nix: "does not appear to be a binary cache" (its nix-cache-info got 401)
    expect(refused.stderr).toContain("does not appear to be a binary cache");
    const pushed = await copy(netrc);
    expect(pushed.stderr).not.toContain("error:");
    expect(pushed.code).toBe(0);
  }, T);

  test("substituting needs the get token in netrc", async () => {
    const readNetrc = join(nix.root, "netrc-read");
    await writeFile(readNetrc, `machine ${new URL(ncps.url).hostname} login nix password read-token\n`);
    const tryFrom = (file: string, store: string) =>
      nix.run(
        ["nix", "copy", "--from", ncps.url, "--to", store, "--option", "trusted-public-keys", ncps.publicKey, "--option", "netrc-file", file, built.top],
        { allowFail: true },
      );
    const denied = await tryFrom(wrongNetrc, nix.store("denied"));
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toContain("does not appear to be a binary cache");
    const store = nix.store("allowed");
    const ok = await tryFrom(readNetrc, store);
    expect(ok.stderr).not.toContain("error:");
    expect(ok.code).toBe(0);
    await verifyStore(nix, store, built.paths, [ncps.publicKey]);
  }, T);

  test("ncps itself answers 401 without the get token and 200 with it (nix-cache-info and narinfo)", async () => {
    const basic = (user: string, password: string) => ({ authorization: `Basic ${btoa(`${user}:${password}`)}` });
    const narInfo = `${storePathHash(built.top)}.narinfo`; // pushed by the first test
    for (const path of ["nix-cache-info", narInfo]) {
      const anonymous = await fetch(`${ncps.url}/${path}`);
      expect(anonymous.status).toBe(401);
      expect((await fetch(`${ncps.url}/${path}`, { headers: basic("nix", "nope") })).status).toBe(401);
      expect((await fetch(`${ncps.url}/${path}`, { headers: basic("nix", "read-token") })).status).toBe(200);
    }
  }, T);
});
