/** The linux-arm64 release binary, run under user-mode emulation on an x64 machine (or
 * directly on an arm64 one): it reports its version, and serves a real Nix client (running
 * natively) a small closure of xz NARs (one of 8 MB) from a real upstream, verifying them with the embedded
 * WebAssembly xz decoder. Runs only when NCPS_TEST_ARM64_BIN names the binary (.ci/run builds
 * it with `bun run build --all` and installs qemu-user-static and libc6:arm64 for it). */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNcpsProcess } from "../helpers/ncps.ts";
import { buildClosure, createNixEnv, makeKeyPair, publishCache, storePathHash, substitute, verifyStore, type NixEnv } from "../helpers/nix.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const BIN = process.env.NCPS_TEST_ARM64_BIN ?? "";
// Emulated, Bun starts in seconds rather than milliseconds and hashes several times slower.
const T = 180_000;

/** How to run an arm64 executable here: directly on arm64, else through qemu's user mode
 * (named explicitly: binfmt_misc is often not registered inside a container). */
function runner(): string[] {
  if (process.arch === "arm64") return [];
  const qemu = Bun.which("qemu-aarch64-static") ?? Bun.which("qemu-aarch64");
  if (!qemu) throw new Error("NCPS_TEST_ARM64_BIN is set but neither qemu-aarch64-static nor qemu-aarch64 is installed");
  return [qemu];
}

describe.skipIf(BIN === "")("linux-arm64 binary", () => {
  let work: string;
  let nix: NixEnv;
  let up: Upstream;
  let closure: { paths: string[] };
  let publicKey: string;
  let launcher: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "ncps-arm64-"));
    launcher = join(work, "ncps-arm64.sh");
    const argv = [...runner(), BIN].map((a) => JSON.stringify(a)).join(" ");
    await writeFile(launcher, `#!/bin/sh\nexec ${argv} "$@"\n`, { mode: 0o755 });
    nix = await createNixEnv();
    const key = await makeKeyPair(nix, "arm64-upstream-1");
    publicKey = key.publicKey;
    const store = nix.store("upstream");
    closure = await buildClosure(nix, store, { count: 3, bigBytes: 8 * 1024 * 1024, bigFrom: "usr-bin", seed: `arm64-${Date.now()}` });
    await publishCache(nix, store, closure.paths, join(work, "xz"), { compression: "xz", key });
    up = await startUpstream(join(work, "xz"));
  }, T);

  afterAll(async () => {
    await up?.stop();
    await nix?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test("is an aarch64 executable that prints its version", async () => {
    const head = new Uint8Array(await Bun.file(BIN).slice(0, 20).arrayBuffer());
    expect([...head.subarray(0, 4)]).toEqual([0x7f, 0x45, 0x4c, 0x46]); // ELF
    expect(head[18]! | (head[19]! << 8)).toBe(183); // e_machine EM_AARCH64
    const proc = Bun.spawn([launcher, "--version"], { stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    expect(err).toBe("");
    expect(out).toMatch(/^ncps \d+\.\d+\.\d+\S* \(([0-9a-f]{12}(-dirty)?|unknown)\)\n$/);
    expect(code).toBe(0);
  }, T);

  test("serves a real Nix client a closure of xz NARs from a real upstream", async () => {
    const ncps = await startNcpsProcess({
      command: launcher,
      dataDir: join(work, "data"),
      args: ["--cache-upstream-url", up.url, "--cache-upstream-public-key", publicKey],
      timeoutMs: 120_000,
    });
    try {
      const store = nix.store("client");
      const r = await substitute(nix, { from: ncps.url, paths: [closure.paths.at(-1)!], trustedKeys: [ncps.publicKey], store, timeoutMs: 150_000 });
      expect(r.stderr).not.toContain("error:");
      expect(r.code).toBe(0);
      await verifyStore(nix, store, closure.paths, [ncps.publicKey]);
      // each NAR came from the upstream as xz, once, and was verified on the way through
      for (const path of closure.paths) {
        const url = /^URL: (.*)$/m.exec(await Bun.file(join(up.dir, `${storePathHash(path)}.narinfo`)).text())![1]!;
        expect(url).toEndWith(".nar.xz");
        expect(up.hits(`/${url}`)).toBe(1);
      }
      expect(ncps.logs.filter((line) => /xz|TMPDIR/.test(line) && /error|fail/i.test(line))).toEqual([]);
    } finally {
      await ncps.stop();
    }
  }, T);
});
