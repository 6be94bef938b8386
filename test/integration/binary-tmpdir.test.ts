/** The compiled binary writes nothing to $TMPDIR and executes nothing from it: the xz decoder
 * is WebAssembly embedded in the binary (issue 19; before, a native addon was unpacked there
 * and a noexec or read-only /tmp lost every xz NAR). With a TMPDIR mounted read-only or
 * noexec, ncps starts and serves zstd and xz NARs alike. Each run gets its own tmpfs in a
 * private mount namespace (unshare), so nothing leaks into the machine's mounts. */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compiledNcps, removeCompiledNcps } from "../helpers/binary.ts";
import { startNcpsProcess } from "../helpers/ncps.ts";
import { buildClosure, createNixEnv, makeKeyPair, nixAvailable, publishCache, substitute, type KeyPair, type NixEnv } from "../helpers/nix.ts";
import { hasCommand, testIf } from "../helpers/prereq.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const T = 180_000;

/** Root with CAP_SYS_ADMIN (as in CI) can make a private mount namespace with a tmpfs. */
function canMountPrivately(): boolean {
  if (!hasCommand("unshare") || !hasCommand("mount")) return false;
  const probe = Bun.spawnSync(["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", tmpdir()], {
    stdout: "ignore",
    stderr: "ignore",
  });
  return probe.exitCode === 0;
}

const test = testIf(
  nixAvailable && canMountPrivately(),
  "needs the real Nix (nix-bin) and root allowed to mount a tmpfs in a private mount namespace (unshare --mount)",
);

let nix: NixEnv;
let work: string;
let key: KeyPair;
let xzClosure: { paths: string[] };
let zstdClosure: { paths: string[] };
let xzUp: Upstream;
let zstdUp: Upstream;

beforeAll(async () => {
  if (!nixAvailable) return;
  nix = await createNixEnv();
  work = await mkdtemp(join(tmpdir(), "ncps-tmpdir-"));
  key = await makeKeyPair(nix, "tmpdir-upstream-1");
  const store = nix.store("upstream");
  xzClosure = await buildClosure(nix, store, { count: 2, seed: `tmpdir-xz-${Date.now()}` });
  zstdClosure = await buildClosure(nix, store, { count: 2, seed: `tmpdir-zstd-${Date.now()}` });
  await publishCache(nix, store, xzClosure.paths, join(work, "xz"), { compression: "xz", key });
  await publishCache(nix, store, zstdClosure.paths, join(work, "zstd"), { compression: "zstd", key });
  xzUp = await startUpstream(join(work, "xz"));
  zstdUp = await startUpstream(join(work, "zstd"));
}, T);

afterAll(async () => {
  await removeCompiledNcps();
  await Promise.all([xzUp?.stop(), zstdUp?.stop()]);
  await nix?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

/** A launcher that runs the binary with TMPDIR on a fresh tmpfs mounted with `mountOptions`
 * ("" = an ordinary writable tmpfs). */
async function launcher(name: string, binary: string, tmp: string, mountOptions: string): Promise<string> {
  const inner = join(work, `${name}-inner.sh`);
  const outer = join(work, `${name}.sh`);
  const opts = ["size=256m", ...(mountOptions ? [mountOptions] : [])].join(",");
  await writeFile(inner, `mount -t tmpfs -o ${opts} tmpfs ${JSON.stringify(tmp)} || exit 97\nexec ${JSON.stringify(binary)} "$@"\n`);
  await writeFile(outer, `#!/bin/sh\nexec unshare --mount --propagation private /bin/sh ${JSON.stringify(inner)} "$@"\n`, { mode: 0o755 });
  return outer;
}

describe("compiled binary with an unusable TMPDIR", () => {
  for (const { name, mountOptions } of [
    { name: "read-only", mountOptions: "ro" },
    { name: "noexec", mountOptions: "noexec" },
    { name: "writable (control)", mountOptions: "" },
  ]) {
    test(`TMPDIR ${name}: ncps starts and serves zstd and xz NARs`, async () => {
      const { binary } = await compiledNcps();
      const slug = name.replace(/\W+/g, "-");
      const tmp = join(work, `tmp-${slug}`);
      await mkdir(tmp);
      const server = await startNcpsProcess({
        command: await launcher(slug, binary, tmp, mountOptions),
        dataDir: join(work, `data-${slug}`),
        args: ["--cache-upstream-url", zstdUp.url, "--cache-upstream-url", xzUp.url, "--cache-upstream-public-key", key.publicKey],
        env: { TMPDIR: tmp },
      });
      try {
        expect((await fetch(`${server.url}/nix-cache-info`)).status).toBe(200);
        const zstd = await substitute(nix, { from: server.url, paths: [zstdClosure.paths.at(-1)!], trustedKeys: [server.publicKey], store: nix.store(`zstd-${slug}`) });
        expect(zstd.stderr).not.toContain("error:");
        expect(zstd.code).toBe(0);

        const xz = await substitute(nix, { from: server.url, paths: [xzClosure.paths.at(-1)!], trustedKeys: [server.publicKey], store: nix.store(`xz-${slug}`) });
        expect(xz.stderr).not.toContain("error:");
        expect(xz.code).toBe(0);
        expect(server.logs.filter((line) => /TMPDIR|xz (stream|decompression)/.test(line))).toEqual([]);
      } finally {
        await server.stop();
      }
    }, T);
  }
});
