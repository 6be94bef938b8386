/** An upstream that wants HTTP Basic credentials: ncps sends the ones its --netrc-file names
 * for that host, and without the right ones the path is a miss (404), not an error. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { parsePublicKey, verifyNarInfo } from "../../src/nix/signature.ts";
import { CACHE_NIXOS_ORG_KEY, readFixture } from "../helpers/fixtures.ts";
import { startInProcess } from "../helpers/ncps.ts";

const HASH = "n5glp21rsz314qssw9fbvfswgy3kc68f";
const GOOD_AUTH = `Basic ${btoa("alice:s3cret")}`;

describe("upstream credentials from --netrc-file", () => {
  let work: string;
  let upstream: ReturnType<typeof Bun.serve>;
  /** The Authorization header of every narinfo request the upstream saw ("" when none). */
  const narInfoAuth: string[] = [];
  const running: RunningNcps[] = [];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "ncps-upstream-netrc-"));
    const narInfo = readFixture(HASH);
    upstream = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req) {
        const path = new URL(req.url).pathname;
        const auth = req.headers.get("authorization") ?? "";
        if (path.endsWith(".narinfo")) narInfoAuth.push(auth);
        if (auth !== GOOD_AUTH) return new Response("unauthorized\n", { status: 401, headers: { "www-authenticate": 'Basic realm="test"' } });
        if (path === "/nix-cache-info") return new Response("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n");
        if (path === `/${HASH}.narinfo`) return new Response(narInfo, { headers: { "content-type": "text/x-nix-narinfo" } });
        return new Response("not found\n", { status: 404 });
      },
    });
  });

  afterAll(async () => {
    for (const n of running) await n.stop();
    await upstream?.stop(true);
    await rm(work, { recursive: true, force: true });
  });

  /** An ncps in this process whose only upstream is the one above, reading `netrc`. */
  async function ncpsWithNetrc(name: string, netrc: string): Promise<RunningNcps> {
    const netrcFile = join(work, `${name}.netrc`);
    await writeFile(netrcFile, netrc);
    const ncps = await startInProcess(join(work, name), {
      "cache-upstream-url": [`http://127.0.0.1:${upstream.port}`],
      "cache-upstream-public-key": [CACHE_NIXOS_ORG_KEY],
      "netrc-file": netrcFile,
    });
    running.push(ncps);
    return ncps;
  }

  test("the right login and password for 127.0.0.1: the narinfo is fetched, verified and served", async () => {
    const ncps = await ncpsWithNetrc("right", "machine 127.0.0.1 login alice password s3cret\n");
    narInfoAuth.length = 0;
    const res = await fetch(`${ncps.url}/${HASH}.narinfo`);
    expect(res.status).toBe(200);
    const served = parseNarInfo(await res.text());
    expect(served.storePath).toBe(parseNarInfo(readFixture(HASH)).storePath);
    expect(verifyNarInfo(served, [parsePublicKey(ncps.publicKey)])).toBe(true);
    expect(verifyNarInfo(served, [parsePublicKey(CACHE_NIXOS_ORG_KEY)])).toBe(true);
    expect(narInfoAuth).toEqual([GOOD_AUTH]);
  });

  for (const [name, netrc, sent] of [
    ["wrong-password", "machine 127.0.0.1 login alice password nope\n", `Basic ${btoa("alice:nope")}`],
    ["other-host", "machine cache.example.org login alice password s3cret\n", ""],
  ] as const) {
    test(`${name}: the upstream refuses, ncps answers 404`, async () => {
      const ncps = await ncpsWithNetrc(name, netrc);
      narInfoAuth.length = 0;
      const res = await fetch(`${ncps.url}/${HASH}.narinfo`);
      expect(res.status).toBe(404);
      // ncps asked (so the 404 is the upstream's refusal), with exactly what its netrc says
      expect(narInfoAuth.length).toBeGreaterThan(0);
      for (const auth of narInfoAuth) expect(auth).toBe(sent);
    });
  }
});
