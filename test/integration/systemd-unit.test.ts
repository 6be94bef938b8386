/** nix/ncps.service: hardened as documented, accepted by `systemd-analyze verify`, and its
 * ExecStart, run with the unit's environment and directories (in temp dirs, without
 * systemd), starts a serving ncps that reads the unit's config and environment files. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compiledNcps, removeCompiledNcps } from "../helpers/binary.ts";
import { startNcpsProcess } from "../helpers/ncps.ts";
import { hasCommand, testIf } from "../helpers/prereq.ts";
import { execStart, parseUnit, unitEnvironment, unitValues, type SpecifierDirs, type Unit } from "../helpers/systemd-unit.ts";

const T = 120_000;
const UNIT_FILE = new URL("../../nix/ncps.service", import.meta.url).pathname;
const INSTALLED_BINARY = "/usr/local/bin/ncps";

let unitText: string;
let unit: Unit;
let work: string;

beforeAll(async () => {
  unitText = await readFile(UNIT_FILE, "utf8");
  unit = parseUnit(unitText);
  work = await mkdtemp(join(tmpdir(), "ncps-unit-test-"));
});

afterAll(async () => {
  await removeCompiledNcps();
  if (work) await rm(work, { recursive: true, force: true });
});

test("the unit is hardened and keeps state, temp files and config where documented", () => {
  const service = (key: string) => unitValues(unit, "Service", key);
  expect(service("DynamicUser")).toEqual(["yes"]);
  expect(service("StateDirectory")).toEqual(["ncps"]);
  expect(service("CacheDirectory")).toEqual(["ncps"]);
  expect(service("ProtectSystem")).toEqual(["strict"]);
  expect(service("NoNewPrivileges")).toEqual(["yes"]);
  expect(service("Restart")).toEqual(["on-failure"]);
  expect(service("Environment")).toContain("TMPDIR=%C/ncps");
  expect(service("Environment")).toContain("NCPS_CONFIG_FILE=%E/ncps/config.yaml");
  expect(service("EnvironmentFile")).toEqual(["-%E/ncps/ncps.env"]);
  expect(service("ExecStart")).toEqual([`${INSTALLED_BINARY} serve --cache-temp-path=%C/ncps`]);
  // The JIT needs W+X memory: this setting would kill ncps at start.
  expect(service("MemoryDenyWriteExecute")).toEqual([]);
  expect(unitValues(unit, "Install", "WantedBy")).toEqual(["multi-user.target"]);
});

testIf(hasCommand("systemd-analyze"), "systemd-analyze (apt: systemd) verifies the unit")(
  "systemd-analyze verify accepts the unit (with ExecStart pointing at a real binary)",
  async () => {
    const { binary } = await compiledNcps();
    const copy = join(work, "verify", "ncps.service");
    await mkdir(join(work, "verify"));
    await writeFile(copy, unitText.replace(`ExecStart=${INSTALLED_BINARY} `, `ExecStart=${binary} `));
    const r = Bun.spawnSync(["systemd-analyze", "verify", copy], { stdout: "pipe", stderr: "pipe" });
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
  },
  T,
);

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

test("ExecStart, run with the unit's environment and directories, serves /nix-cache-info", async () => {
  const { binary } = await compiledNcps();
  const root = join(work, "root");
  const dirs: SpecifierDirs = { state: join(root, "var/lib"), cache: join(root, "var/cache"), config: join(root, "etc") };
  // What systemd creates for StateDirectory=, CacheDirectory= and ConfigurationDirectory=.
  for (const dir of [dirs.state, dirs.cache, dirs.config]) await mkdir(join(dir, "ncps"), { recursive: true });
  await writeFile(
    join(dirs.config, "ncps/config.yaml"),
    ["server:", "  addr: 127.0.0.1:0", "cache:", "  hostname: unit-test", "  upstream:", "    urls: [http://127.0.0.1:9]", ""].join("\n"),
  );
  await writeFile(join(dirs.config, "ncps/ncps.env"), "CACHE_PRIORITY=33\n");

  const env = await unitEnvironment(unit, dirs);
  const [program, ...args] = execStart(unit, dirs);
  expect(program).toBe(INSTALLED_BINARY);
  const workingDirectory = unitValues(unit, "Service", "WorkingDirectory")[0]!.replace("%S", dirs.state);
  // systemd starts the command with exactly the unit's environment, in its working directory.
  const launcher = join(work, "exec-start.sh");
  const assignments = Object.entries(env).map(([k, v]) => shellQuote(`${k}=${v}`));
  await writeFile(
    launcher,
    `#!/bin/sh\ncd ${shellQuote(workingDirectory)} || exit 97\nexec env -i ${assignments.join(" ")} ${[binary, ...args].map(shellQuote).join(" ")}\n`,
    { mode: 0o755 },
  );

  const server = await startNcpsProcess({ command: launcher, dataDir: join(dirs.state, "ncps") });
  try {
    const res = await fetch(`${server.url}/nix-cache-info`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("Priority: 33"); // from the EnvironmentFile
    expect(server.publicKey).toStartWith("unit-test:"); // from the config file
  } finally {
    await server.stop();
  }
  // The data went to the state directory (CACHE_STORAGE_LOCAL from the unit).
  expect(existsSync(join(dirs.state, "ncps/db/db.sqlite"))).toBe(true);
}, T);
