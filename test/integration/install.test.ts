/** install.sh as users run it: `curl -fsSL <base>/install.sh | sh`, against a release
 * directory (the build output: binary + SHA256SUMS) served over loopback HTTP. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { compiledNcps, removeCompiledNcps, type CompiledNcps } from "../helpers/binary.ts";
import { hasCommand, testIf } from "../helpers/prereq.ts";

const T = 120_000;
const INSTALL_SH = new URL("../../install.sh", import.meta.url).pathname;

let ncps: CompiledNcps;
let work: string;
let server: ReturnType<typeof Bun.serve>;
/** release name ("good", "tampered") -> directory served at /<name>/ */
const releases = new Map<string, string>();

beforeAll(async () => {
  ncps = await compiledNcps();
  work = await mkdtemp(join(tmpdir(), "ncps-install-test-"));
  releases.set("good", ncps.dir);
  // Same SHA256SUMS, one byte of the binary changed: what a compromised mirror would serve.
  const tampered = join(work, "tampered-release");
  await mkdir(tampered);
  const bytes = new Uint8Array(await readFile(ncps.binary));
  bytes[bytes.length >> 1]! ^= 0xff;
  await writeFile(join(tampered, basename(ncps.binary)), bytes);
  await writeFile(join(tampered, "SHA256SUMS"), await readFile(join(ncps.dir, "SHA256SUMS")));
  releases.set("tampered", tampered);
  // A release that has no binary for this platform (SHA256SUMS names none).
  const missing = join(work, "missing-release");
  await mkdir(missing);
  await writeFile(join(missing, "SHA256SUMS"), "");
  releases.set("missing", missing);
  // The unprivileged-user test needs to reach its home under here.
  await chmod(work, 0o755);

  server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const [, release, file] = new URL(req.url).pathname.split("/");
      const dir = releases.get(release ?? "");
      if (!dir || !file) return new Response("not found", { status: 404 });
      const body = Bun.file(file === "install.sh" ? INSTALL_SH : join(dir, file));
      return (await body.exists()) ? new Response(body) : new Response("not found", { status: 404 });
    },
  });
}, T);

afterAll(async () => {
  await removeCompiledNcps();
  server?.stop(true);
  if (work) await rm(work, { recursive: true, force: true });
});

/** `curl -fsSL <base>/install.sh | sh -s -- ARGS`, with /bin/sh (dash on Debian: POSIX). */
async function curlPipeSh(release: string, args: string[], opts: { home: string; asUser?: string }) {
  const base = `http://127.0.0.1:${server.port}/${release}`;
  const script = `curl -fsSL ${base}/install.sh | sh -s -- ${args.map((a) => `'${a}'`).join(" ")}`;
  const asUser = opts.asUser ? ["setpriv", `--reuid=${opts.asUser}`, `--regid=${opts.asUser}`, "--clear-groups"] : [];
  const proc = Bun.spawn([...asUser, "/bin/sh", "-c", script], {
    env: { PATH: "/usr/bin:/bin", HOME: opts.home, NCPS_INSTALL_BASE_URL: base, TMPDIR: opts.home },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

async function listOrEmpty(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

const testCurl = testIf(hasCommand("curl"), "install.sh is tested through curl");

testCurl("installs into --prefix DIR/bin, the installed ncps runs, and the next command is printed", async () => {
  const home = await mkdtemp(join(work, "home-"));
  const prefix = join(work, "prefix");
  const r = await curlPipeSh("good", ["--prefix", prefix], { home });
  expect(r.stderr).not.toContain("error");
  expect(r.code).toBe(0);
  expect(await readdir(join(prefix, "bin"))).toEqual(["ncps"]);
  const version = Bun.spawnSync([join(prefix, "bin", "ncps"), "--version"]);
  expect(version.exitCode).toBe(0);
  expect(version.stdout.toString()).toBe(`ncps ${ncps.stamp.version} (${ncps.stamp.commit})\n`);
  expect(r.stderr).toContain(`installed ncps ${ncps.stamp.version}`);
  expect(r.stdout).toContain(`${join(prefix, "bin", "ncps")} serve`);
  // nothing left behind in the download directory
  expect(await readdir(home)).toEqual([]);
}, T);

testCurl("a binary that does not match SHA256SUMS is refused and nothing is installed", async () => {
  const home = await mkdtemp(join(work, "home-"));
  const prefix = join(work, "prefix-tampered");
  const r = await curlPipeSh("tampered", ["--prefix", prefix], { home });
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain("checksum mismatch");
  expect(await listOrEmpty(join(prefix, "bin"))).toEqual([]);
  expect(await readdir(home)).toEqual([]);
}, T);

testCurl("a release without this platform's binary is refused", async () => {
  const home = await mkdtemp(join(work, "home-"));
  const r = await curlPipeSh("missing", ["--prefix", join(work, "prefix-missing")], { home });
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain(`cannot download http://127.0.0.1:${server.port}/missing/${basename(ncps.binary)}`);
  expect(await listOrEmpty(join(work, "prefix-missing", "bin"))).toEqual([]);
}, T);

const isRoot = process.getuid?.() === 0;
testIf(isRoot && hasCommand("setpriv") && hasCommand("curl"), "needs root and setpriv to run the installer as an unprivileged user")(
  "without --prefix, an unprivileged user gets ~/.local/bin/ncps",
  async () => {
    const home = await mkdtemp(join(work, "home-user-"));
    await chown(home, 65534, 65534);
    const r = await curlPipeSh("good", [], { home, asUser: "65534" });
    expect(r.stderr).not.toContain("error");
    expect(r.code).toBe(0);
    expect(await readdir(join(home, ".local", "bin"))).toEqual(["ncps"]);
    // not on that user's PATH: the next command names the full path
    expect(r.stdout).toContain(`${join(home, ".local", "bin", "ncps")} serve`);
  },
  T,
);

// On an aarch64 machine install.sh must fetch ncps-linux-arm64. Here uname is faked and the
// "binaries" are scripts, so the choice is checked on any machine; the loader check still
// looks for the real arm64 glibc loader (libc6:arm64, installed by .ci/run).
const armLoader = "/lib/ld-linux-aarch64.so.1";
testIf(hasCommand("curl") && (process.arch === "arm64" || (await Bun.file(armLoader).exists())), `needs curl and ${armLoader} (libc6:arm64)`)(
  "on aarch64 it installs ncps-linux-arm64",
  async () => {
    const release = join(work, "two-arch-release");
    await mkdir(release);
    const sums: string[] = [];
    for (const arch of ["x64", "arm64"]) {
      const name = `ncps-linux-${arch}`;
      const body = `#!/bin/sh\necho "ncps 0.0.0 (${arch})"\n`;
      await writeFile(join(release, name), body);
      sums.push(`${new Bun.CryptoHasher("sha256").update(body).digest("hex")}  ${name}`);
    }
    await writeFile(join(release, "SHA256SUMS"), `${sums.join("\n")}\n`);
    releases.set("two-arch", release);
    const fakeBin = join(work, "fake-uname");
    await mkdir(fakeBin);
    await writeFile(join(fakeBin, "uname"), `#!/bin/sh\ncase "$1" in -m) echo aarch64 ;; -s) echo Linux ;; *) exec /bin/uname "$@" ;; esac\n`, { mode: 0o755 });

    const home = await mkdtemp(join(work, "home-arm64-"));
    const prefix = join(work, "prefix-arm64");
    const base = `http://127.0.0.1:${server.port}/two-arch`;
    const proc = Bun.spawn(["/bin/sh", "-c", `curl -fsSL ${base}/install.sh | sh -s -- --prefix '${prefix}'`], {
      env: { PATH: `${fakeBin}:/usr/bin:/bin`, HOME: home, NCPS_INSTALL_BASE_URL: base, TMPDIR: home },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
    expect(stderr).toContain(`downloading ${base}/ncps-linux-arm64`);
    expect(stderr).toContain("installed ncps 0.0.0 (arm64)");
    expect(code).toBe(0);
    expect(await readFile(join(prefix, "bin", "ncps"), "utf8")).toContain("(arm64)");
  },
  T,
);
