/** nix/module.nix and nix/package.nix, evaluated by the real Nix evaluator against the lib
 * stand-in in test/nix (no nixpkgs here): the options render into a config file that ncps's
 * own loadConfig reads back as intended, and the service matches nix/ncps.service. */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { allPlatforms, binaryName } from "../../build.ts";
import { loadConfig, type Config } from "../../src/config/load.ts";
import { testIf } from "../helpers/prereq.ts";
import { parseUnit, unitValues } from "../helpers/systemd-unit.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const EVAL_NIX = join(ROOT, "test/nix/eval.nix");
const test = testIf(Bun.which("nix-instantiate") !== null, "nix-instantiate (apt: nix-bin) evaluates the Nix files");

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-nix-module-"));
  await mkdir(join(work, "nix-conf"));
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** nix-instantiate with no store to write to and no user or system nix.conf. */
function nixInstantiate(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = Bun.spawnSync(["nix-instantiate", "--store", "dummy://", "--readonly-mode", ...args], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: work, NIX_CONF_DIR: join(work, "nix-conf"), XDG_CONFIG_HOME: work },
    stdout: "pipe",
    stderr: "pipe",
  });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

function evalJson<T>(expr: string): T {
  const r = nixInstantiate(["--eval", "--strict", "--json", "-E", expr]);
  if (r.code !== 0) throw new Error(`nix evaluation failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

interface ModuleResult {
  configFile: { path: string; text: string } | null;
  service: { environment: Record<string, string>; serviceConfig: Record<string, unknown>; wantedBy: string[] } | null;
  allowedTCPPorts: number[];
}

/** `services.ncps = { <body> };` as a NixOS configuration would say it. */
function evalModule(body: string): ModuleResult {
  return evalJson<ModuleResult>(`(import ${EVAL_NIX}).evalModule { services.ncps = { ${body} }; }`);
}

function evalModuleError(body: string): string {
  const r = nixInstantiate(["--eval", "--strict", "--json", "-E", `(import ${EVAL_NIX}).evalModule { services.ncps = { ${body} }; }`]);
  expect(r.code).not.toBe(0);
  return r.stderr;
}

/** Loads the rendered file with ncps's loadConfig, as the service would (no flags, no
 * environment); returns the config and the unknown keys it warned about. */
async function loadRendered(result: ModuleResult, name: string): Promise<{ config: Config; unknownKeys: string[] }> {
  expect(result.configFile).not.toBeNull();
  const path = join(work, `${name}.json`);
  await writeFile(path, result.configFile!.text);
  const warnings: string[] = [];
  const config = await loadConfig({ config: path }, {}, { warn: (w) => warnings.push(w), system: { isRoot: true, hostname: "machine" } });
  const unknownKeys = warnings.flatMap((w) => /ignoring unknown keys: (.*)$/.exec(w)?.[1]?.split(", ") ?? []);
  expect(warnings.filter((w) => !w.includes("ignoring unknown keys"))).toEqual([]);
  return { config, unknownKeys };
}

test("every .nix file parses", async () => {
  const files = [
    ...(await readdir(join(ROOT, "nix"))).filter((f) => f.endsWith(".nix")).map((f) => join(ROOT, "nix", f)),
    ...(await readdir(join(ROOT, "test/nix"))).filter((f) => f.endsWith(".nix")).map((f) => join(ROOT, "test/nix", f)),
  ];
  expect(files.map((f) => f.slice(ROOT.length)).sort()).toEqual(["nix/module.nix", "nix/package.nix", "test/nix/eval.nix", "test/nix/lib.nix"]);
  for (const file of files) {
    const r = nixInstantiate(["--parse", file]);
    expect({ file, stderr: r.stderr, code: r.code }).toEqual({ file, stderr: "", code: 0 });
  }
});

describe("services.ncps", () => {
  test("every named option reaches ncps through the config file", async () => {
    const result = evalModule(`
      enable = true;
      cache.hostName = "ncps.lan";
      cache.dataPath = "/var/lib/ncps/data";
      cache.tempPath = "/var/cache/ncps/tmp";
      cache.databaseURL = "postgres://ncps@db.lan:5432/ncps";
      cache.maxSize = "100G";
      cache.lru.schedule = "0 2 * * *";
      cache.allowPutVerb = true;
      cache.allowDeleteVerb = true;
      cache.secretKeyPath = "/etc/ncps/secret-key";
      server.addr = "127.0.0.1:8600";
      upstream.caches = [ "https://cache.nixos.org" "https://nix-community.cachix.org" ];
      upstream.publicKeys = [
        "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
        "nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs="
      ];
    `);
    const { config, unknownKeys } = await loadRendered(result, "all-options");
    expect(config).toMatchObject({
      cacheHostname: "ncps.lan",
      cacheStorageLocal: "/var/lib/ncps/data",
      cacheTempPath: "/var/cache/ncps/tmp",
      cacheDatabaseUrl: "postgres://ncps@db.lan:5432/ncps",
      // handed to the service by systemd's LoadCredential (below)
      cacheSecretKeyPath: "/run/credentials/ncps.service/secret-key",
      serverAddr: "127.0.0.1:8600",
      cacheUpstreamUrls: ["https://cache.nixos.org", "https://nix-community.cachix.org"],
      cacheUpstreamPublicKeys: [
        "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
        "nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs=",
      ],
    });
    expect((config as unknown as Record<string, unknown>).cacheAllowPutVerb).toBe(true);
    expect((config as unknown as Record<string, unknown>).cacheAllowDeleteVerb).toBe(true);
    // max-size and lru.schedule, under the Go ncps's names, are read: the cap and schedule hold
    expect(config.cacheMaxSize).toBe(100 * 2 ** 30);
    expect(config.cacheLruSchedule).toBe("0 2 * * *");
    expect(unknownKeys).toEqual([]);
    expect(JSON.parse(result.configFile!.text)).toMatchObject({ cache: { "max-size": "100G", lru: { schedule: "0 2 * * *" } } });

    const sc = result.service!.serviceConfig;
    expect(sc.LoadCredential).toEqual(["secret-key:/etc/ncps/secret-key"]);
    // both paths are below systemd-managed directories, created for the dynamic user
    expect(sc.StateDirectory).toEqual(["ncps", "ncps/data"]);
    expect(sc.CacheDirectory).toEqual(["ncps", "ncps/tmp"]);
    expect(sc.ReadWritePaths).toEqual([]);
    expect(result.service!.environment.TMPDIR).toBe("/var/cache/ncps/tmp");
  });

  test("the README's NixOS configuration evaluates, and ncps loads what it renders", async () => {
    const readme = await readFile(join(ROOT, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("\n## NixOS\n"));
    const block = /```nix\n([\s\S]*?)```/.exec(section)?.[1];
    expect(block).toContain("services.ncps");
    const result = evalJson<ModuleResult>(`(import ${EVAL_NIX}).evalModule (${block})`);
    const { config, unknownKeys } = await loadRendered(result, "readme");
    expect(unknownKeys).toEqual([]);
    expect(config.cacheHostname).toBe("ncps.lan");
    expect(config.cacheUpstreamUrls).toEqual(["https://cache.nixos.org", "https://nix-community.cachix.org"]);
    expect(config.cacheUpstreamNegativeTtl).toBe(300_000);
    expect(result.allowedTCPPorts).toEqual([8501]);
  });

  test("with only a host name, ncps's own defaults apply and the service reads the rendered file", async () => {
    const result = evalModule(`enable = true; cache.hostName = "ncps.lan";`);
    const { config, unknownKeys } = await loadRendered(result, "defaults");
    expect(unknownKeys).toEqual([]);
    expect(config).toMatchObject({
      cacheHostname: "ncps.lan",
      cacheStorageLocal: "/var/lib/ncps",
      cacheDatabaseUrl: "sqlite:/var/lib/ncps/db/db.sqlite",
      cacheTempPath: "/var/cache/ncps",
      serverAddr: ":8501",
      cacheUpstreamUrls: ["https://cache.nixos.org"],
      cacheUpstreamPublicKeys: ["cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="],
    });
    expect(config.cacheSecretKeyPath).toBeUndefined();
    const service = result.service!;
    expect(service.environment.NCPS_CONFIG_FILE).toBe(result.configFile!.path);
    expect(service.environment.TMPDIR).toBe("/var/cache/ncps");
    expect(service.serviceConfig.ExecStart).toMatch(/^\/nix\/store\/[^/]+-ncps-[^/]+\/bin\/ncps serve$/);
    expect(service.wantedBy).toEqual(["multi-user.target"]);
    expect(service.serviceConfig.LoadCredential).toEqual([]);
    expect(result.allowedTCPPorts).toEqual([]);
  });

  test("settings reach the file too, and win over the named options", async () => {
    const result = evalModule(`
      enable = true;
      cache.hostName = "ncps.lan";
      server.addr = ":8501";
      settings = { server.addr = ":9000"; log.level = "debug"; cache.upstream.negative-ttl = "5m"; };
    `);
    const { config } = await loadRendered(result, "settings");
    expect(config.serverAddr).toBe(":9000");
    expect(config.logLevel).toBe("debug");
    expect(config.cacheUpstreamNegativeTtl).toBe(300_000);
    // merged, not replaced: the named upstream options are still there
    expect(config.cacheUpstreamUrls).toEqual(["https://cache.nixos.org"]);
  });

  test("a data path outside /var/lib is made writable instead of managed", () => {
    const sc = evalModule(`enable = true; cache.hostName = "h"; cache.dataPath = "/srv/ncps";`).service!.serviceConfig;
    expect(sc.StateDirectory).toEqual(["ncps"]);
    expect(sc.ReadWritePaths).toEqual(["/srv/ncps"]);
  });

  test("openFirewall opens the port of server.addr", () => {
    expect(evalModule(`enable = true; cache.hostName = "h"; openFirewall = true;`).allowedTCPPorts).toEqual([8501]);
    expect(evalModule(`enable = true; cache.hostName = "h"; openFirewall = true; server.addr = "0.0.0.0:8080";`).allowedTCPPorts).toEqual([8080]);
  });

  test("disabled, it defines no service", () => {
    expect(evalModule(`enable = false;`)).toEqual({ configFile: null, service: null, allowedTCPPorts: [] });
  });

  test("mistakes stop evaluation with the option's name", () => {
    expect(evalModuleError(`enable = true; cache.hostName = "h"; cache.lru.schedule = "0 2 * * *";`)).toContain(
      "services.ncps.cache.lru.schedule needs services.ncps.cache.maxSize",
    );
    expect(evalModuleError(`enable = true;`)).toContain("services.ncps.cache.hostName' is used but not defined");
    expect(evalModuleError(`enable = true; cache.hostName = "h"; cache.allowPutVerb = "yes";`)).toContain(
      "services.ncps.cache.allowPutVerb' is not of type `bool'",
    );
  });

  test("the service has the hardening of nix/ncps.service", async () => {
    const unit = parseUnit(await readFile(join(ROOT, "nix/ncps.service"), "utf8"));
    const sc = evalModule(`enable = true; cache.hostName = "h";`).service!.serviceConfig;
    // Set differently by design: the module passes settings through its config file.
    const byDesign = new Set(["ExecStart", "Environment", "EnvironmentFile", "WorkingDirectory", "ConfigurationDirectory", "StateDirectory", "CacheDirectory"]);
    const asUnitValues = (v: unknown): string[] =>
      Array.isArray(v) ? v.map(String) : [typeof v === "boolean" ? (v ? "yes" : "no") : String(v)];
    const keys = [...(unit.get("Service")?.keys() ?? [])].filter((k) => !byDesign.has(k));
    expect(keys.length).toBeGreaterThan(30);
    for (const key of keys) {
      const unitValue = unitValues(unit, "Service", key).flatMap((v) => (key === "RestrictAddressFamilies" ? v.split(" ") : [v]));
      expect({ key, value: key in sc ? asUnitValues(sc[key]) : "missing" }).toEqual({ key, value: unitValue });
    }
    expect(sc.WorkingDirectory).toBe("/var/lib/ncps");
  });
});

test("package.nix fetches build.ts's binary for each platform at package.json's version", async () => {
  const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { version: string };
  for (const [system, platform] of [
    ["x86_64-linux", allPlatforms.find((p) => p.arch === "x64")!],
    ["aarch64-linux", allPlatforms.find((p) => p.arch === "arm64")!],
  ] as const) {
    const drv = evalJson<{ url: string; version: string; dontStrip: boolean; mainProgram: string; platforms: string[]; installPhase: string }>(
      `(import ${EVAL_NIX}).package "${system}"`,
    );
    expect(drv.version).toBe(pkg.version);
    expect(drv.url).toEndWith(`/v${pkg.version}/${binaryName(platform)}`);
    // stripping would drop the program embedded in the binary
    expect(drv.dontStrip).toBe(true);
    expect(drv.mainProgram).toBe("ncps");
    expect(drv.platforms.sort()).toEqual(["aarch64-linux", "x86_64-linux"]);
  }
  const other = nixInstantiate(["--eval", "--strict", "--json", "-E", `(import ${EVAL_NIX}).package "x86_64-darwin"`]);
  expect(other.code).not.toBe(0);
  expect(other.stderr).toContain("no release binary for x86_64-darwin");
});
