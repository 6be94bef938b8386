/** build.ts: one executable per platform with version, commit and migrations inside, and a
 * SHA256SUMS that matches; the binary runs alone, with no node_modules anywhere near it. */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { migrationsFor } from "../../src/db/migrations.ts";
import { allPlatforms, build } from "../../build.ts";
import { compiledNcps, removeCompiledNcps, type CompiledNcps } from "../helpers/binary.ts";
import { startNcpsProcess } from "../helpers/ncps.ts";

const T = 120_000;
const ROOT = new URL("../../", import.meta.url).pathname;
let ncps: CompiledNcps;
let work: string;

beforeAll(async () => {
  ncps = await compiledNcps();
  work = await mkdtemp(join(tmpdir(), "ncps-build-test-"));
}, T);

afterAll(async () => {
  await removeCompiledNcps();
  await rm(work, { recursive: true, force: true });
});

test("the binary is named ncps-<os>-<arch> and SHA256SUMS lists its digest", async () => {
  expect(basename(ncps.binary)).toBe(`ncps-linux-${process.arch === "arm64" ? "arm64" : "x64"}`);
  const digest = createHash("sha256").update(await readFile(ncps.binary)).digest("hex");
  expect(await readFile(join(ncps.dir, "SHA256SUMS"), "utf8")).toBe(`${digest}  ${basename(ncps.binary)}\n`);
  expect((await readdir(ncps.dir)).sort()).toEqual(["SHA256SUMS", basename(ncps.binary)].sort());
}, T);

test("--version prints package.json's version and the commit it was built from", async () => {
  const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { version: string };
  const head = Bun.spawnSync(["git", "rev-parse", "--short=12", "HEAD"], { cwd: ROOT });
  const commit = head.exitCode === 0 ? head.stdout.toString().trim() : "unknown";
  const proc = Bun.spawnSync([ncps.binary, "--version"], { cwd: work, env: { PATH: "/usr/bin:/bin" } });
  expect(proc.exitCode).toBe(0);
  // "-dirty" when the tree had uncommitted changes to tracked files at build time
  expect(proc.stdout.toString()).toMatch(new RegExp(`^ncps ${pkg.version.replaceAll(".", "\\.")} \\(${commit}(-dirty)?\\)\\n$`));
  expect(ncps.stamp.version).toBe(pkg.version);
}, T);

test("copied alone into an empty directory, the binary serves and applies its embedded migrations", async () => {
  const alone = join(work, "alone");
  const home = join(work, "home");
  const dataDir = join(work, "data");
  await mkdir(home);
  await mkdir(alone);
  await copyFile(ncps.binary, join(alone, "ncps"));
  // Run from inside that directory, so nothing can be resolved from the project's tree.
  const wrapper = join(work, "run-alone.sh");
  await writeFile(wrapper, `#!/bin/sh\ncd ${JSON.stringify(alone)} && exec ./ncps "$@"\n`, { mode: 0o755 });

  const server = await startNcpsProcess({
    command: wrapper,
    dataDir,
    args: ["--cache-upstream-url", "http://127.0.0.1:9"],
    env: { HOME: home, PATH: "/usr/bin:/bin" },
  });
  try {
    const res = await fetch(`${server.url}/nix-cache-info`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("StoreDir: /nix/store");
  } finally {
    await server.stop();
  }
  expect(await readdir(alone)).toEqual(["ncps"]);
  const db = new Database(join(dataDir, "db", "db.sqlite"), { readonly: true });
  try {
    const applied = db.query("SELECT name FROM schema_migrations ORDER BY name").all() as { name: string }[];
    expect(applied.map((m) => m.name)).toEqual(migrationsFor("sqlite").map((m) => m.name));
  } finally {
    db.close();
  }
}, T);

/** e_machine of an ELF executable: 62 is x86-64, 183 is AArch64. */
async function elfMachine(file: string): Promise<number> {
  const head = new Uint8Array(await Bun.file(file).slice(0, 20).arrayBuffer());
  expect([...head.subarray(0, 4)]).toEqual([0x7f, 0x45, 0x4c, 0x46]);
  return head[18]! | (head[19]! << 8);
}

test("--all builds linux-x64 and linux-arm64 side by side, both in SHA256SUMS", async () => {
  const out = join(work, "all");
  try {
    const result = await build({ outDir: out, platforms: allPlatforms });
    expect((await readdir(out)).sort()).toEqual(["SHA256SUMS", "ncps-linux-arm64", "ncps-linux-x64"]);
    expect(await elfMachine(join(out, "ncps-linux-x64"))).toBe(62);
    expect(await elfMachine(join(out, "ncps-linux-arm64"))).toBe(183);
    const lines = (await readFile(result.checksums, "utf8")).trimEnd().split("\n");
    const expected = await Promise.all(
      ["ncps-linux-x64", "ncps-linux-arm64"].map(async (name) => `${createHash("sha256").update(await readFile(join(out, name))).digest("hex")}  ${name}`),
    );
    expect(lines).toEqual(expected);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}, T);
