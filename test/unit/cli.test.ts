import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { flagSpecsOf, parseFlags } from "../../src/cli/flags.ts";
import { ConfigError } from "../../src/config/errors.ts";
import { options, optionsFor } from "../../src/config/options.ts";

const serveFlags = flagSpecsOf(optionsFor("serve"));

describe("parseFlags", () => {
  const parse = (...tokens: string[]) => parseFlags(tokens, serveFlags, "ncps serve");

  test("a repeated list flag keeps every value, in order", () => {
    const { values } = parse("--cache-upstream-url", "https://a", "--cache-upstream-url=https://b");
    expect(values["cache-upstream-url"]).toEqual(["https://a", "https://b"]);
  });

  test("--name value and --name=value; a repeated single-value flag keeps the last", () => {
    expect(parse("--cache-hostname", "a", "--cache-hostname=b").values["cache-hostname"]).toBe("b");
  });

  test("booleans: --flag, --no-flag, --flag=false", () => {
    expect(parse("--cache-sign-narinfo").values["cache-sign-narinfo"]).toBe(true);
    expect(parse("--no-cache-sign-narinfo").values["cache-sign-narinfo"]).toBe(false);
    expect(parse("--cache-sign-narinfo=false").values["cache-sign-narinfo"]).toBe(false);
    expect(() => parse("--cache-sign-narinfo=perhaps")).toThrow('--cache-sign-narinfo: invalid boolean "perhaps"');
  });

  test("a deprecated alias keeps its own name, for loadConfig to warn about", () => {
    expect(parse("--upstream-cache", "https://a").values).toEqual({ "upstream-cache": ["https://a"] });
  });

  test("unknown options are errors", () => {
    expect(() => parse("--cache-hostnam", "x")).toThrow(ConfigError);
    expect(() => parse("--cache-hostnam=x")).toThrow("unknown option --cache-hostnam for ncps serve (see ncps serve --help)");
    expect(() => parse("-x")).toThrow("unknown option -x");
    expect(() => parse("--no-cache-hostname")).toThrow("unknown option --no-cache-hostname");
  });

  test("a value flag at the end or before another flag has no value", () => {
    expect(() => parse("--server-addr")).toThrow("option --server-addr needs a value");
    expect(() => parse("--server-addr", "--cache-hostname", "h")).toThrow("option --server-addr needs a value");
  });

  test("positionals, and everything after --", () => {
    expect(parse("extra", "--", "--not-a-flag").positionals).toEqual(["extra", "--not-a-flag"]);
  });
});

// --- the binary, spawned -----------------------------------------------------------------

const home = mkdtempSync(join(tmpdir(), "ncps-cli-test-"));
afterAll(() => rmSync(home, { recursive: true, force: true }));

const mainPath = join(import.meta.dir, "..", "..", "src", "main.ts");

async function ncps(args: string[], env: Record<string, string> = {}) {
  const proc = Bun.spawn(["bun", mainPath, ...args], {
    // A private home: no config file or netrc of the machine's user leaks in.
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home, XDG_CONFIG_HOME: join(home, "config"), ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, status] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { stdout, stderr, status };
}

function flagsOf(o: (typeof options)[number]): string[] {
  return [`--${o.flag}`, ...(o.deprecated?.flags ?? []).map((f) => `--${f}`)];
}

describe("help", () => {
  test("ncps serve --help lists every flag of the option table but fsck's own, deprecated ones too", async () => {
    const { stdout, stderr, status } = await ncps(["serve", "--help"]);
    expect(status).toBe(0);
    expect(stderr).toBe("");
    expect(stdout).not.toContain("--stray-grace");
    for (const o of options.filter((o) => o.group !== "fsck")) {
      for (const flag of flagsOf(o)) expect(stdout).toContain(flag);
      expect(stdout).toContain(o.env[0] ?? "");
    }
    expect(stdout).toContain("--no-cache-sign-narinfo");
    expect(stdout).not.toContain("\x1b["); // no colours when not on a terminal
  });

  test("ncps --help lists the commands and the shared flags", async () => {
    const { stdout, status } = await ncps(["--help"]);
    expect(status).toBe(0);
    expect(stdout).toContain("serve");
    expect(stdout).toContain("migrate");
    expect(stdout).toContain("--version");
    for (const o of optionsFor("migrate")) for (const flag of flagsOf(o)) expect(stdout).toContain(flag);
  });

  test("ncps migrate --help, migrate up --help, migrate status --help", async () => {
    const migrate = await ncps(["migrate", "--help"]);
    expect(migrate.status).toBe(0);
    expect(migrate.stdout).toContain("up");
    expect(migrate.stdout).toContain("status");
    const up = await ncps(["migrate", "up", "--help"]);
    expect(up.status).toBe(0);
    expect(up.stdout).toContain("--dry-run");
    for (const o of optionsFor("migrate")) for (const flag of flagsOf(o)) expect(up.stdout).toContain(flag);
    expect(up.stdout).not.toContain("--cache-upstream-url");
    const status = await ncps(["migrate", "status", "-h"]);
    expect(status.status).toBe(0);
    expect(status.stdout).toContain("--cache-database-url");
    expect(status.stdout).not.toContain("--dry-run");
  });

  test("ncps fsck --help: database, storage, temp and upstream flags, its grace and its switches", async () => {
    const { stdout, status } = await ncps(["fsck", "--help"]);
    expect(status).toBe(0);
    for (const o of optionsFor("fsck")) for (const flag of flagsOf(o)) expect(stdout).toContain(flag);
    for (const flag of ["--cache-storage-s3-bucket", "--cache-temp-path", "--cache-upstream-url", "--stray-grace", "--repair", "--dry-run", "--verify-content"]) {
      expect(stdout).toContain(flag);
    }
    expect(stdout).not.toContain("--server-addr");
  });

  test("--help wins over a bad flag", async () => {
    const { status, stdout } = await ncps(["serve", "--bogus", "--help"]);
    expect(status).toBe(0);
    expect(stdout).toContain("--cache-hostname");
  });
});

test("ncps --version and ncps -v print the version and commit", async () => {
  for (const flag of ["--version", "-v"]) {
    const { stdout, status } = await ncps([flag]);
    expect(status).toBe(0);
    expect(stdout).toMatch(/^ncps \S+ \(\S+\)\n$/);
  }
});

test("ncps help, ncps help serve and ncps migrate help print the help, as in the Go ncps", async () => {
  for (const [args, usage] of [[["help"], "USAGE ncps [OPTIONS]"], [["help", "serve"], "USAGE ncps serve"], [["migrate", "help"], "USAGE ncps migrate"]] as const) {
    const { stdout, status } = await ncps([...args]);
    expect(status).toBe(0);
    expect(stdout).toContain(usage);
  }
});

test("the Go ncps's CDC migrations take its flags (--concurrency, --dry-run); a Go-only flag is one warning", async () => {
  const { stdout, stderr, status } = await ncps(["migrate-nar-to-chunks", "--concurrency", "4", "--dry-run", "--cache-cdc-lazy-chunking-enabled"]);
  expect(status).toBe(0);
  expect(stdout).toBe("would convert 0, already chunked 0, kept as they are 0, failed 0\n");
  expect(stderr).not.toContain("--concurrency");
  expect(stderr.trim().split("\n").filter((l) => l.includes("is ignored"))).toHaveLength(1);
  expect(stderr).toContain("--cache-cdc-lazy-chunking-enabled (a Go ncps option) is ignored");
  const migrated = await ncps(["migrate-narinfo", "--dry-run"]);
  expect(migrated.status).toBe(0);
  expect(migrated.stdout).toContain("nothing to do");
});

describe("a mistake is one stderr line, exit status 1, no stack trace", () => {
  const badConfig = join(home, "bad.yaml");
  writeFileSync(badConfig, "cache: [\n");

  const cases: [string, string[], Record<string, string>, string][] = [
    ["unknown flag", ["serve", "--bogus"], {}, "ncps: unknown option --bogus for ncps serve (see ncps serve --help)"],
    ["unknown flag after a global one", ["--log-level", "debug", "serve", "--bogus=1"], {}, "ncps: unknown option --bogus for ncps serve"],
    ["unknown flag on migrate", ["migrate", "up", "--cache-upstream-urls", "https://x"], {}, "ncps: unknown option --cache-upstream-urls for ncps migrate up"],
    ["unknown command", ["serv"], {}, 'ncps: unknown command "serv" for ncps (use serve, migrate, pin'],
    ["no command", [], {}, "ncps: missing command for ncps: use serve or migrate or pin"],
    ["no migrate subcommand", ["migrate"], {}, "ncps: missing command for ncps migrate: use up or status or down"],
    ["stray argument", ["serve", "now"], {}, 'ncps: unexpected argument "now" for ncps serve'],
    ["flag without its value", ["serve", "--server-addr"], {}, "ncps: option --server-addr needs a value"],
    ["bad upstream scheme", ["serve", "--cache-upstream-url", "ftp://x"], {}, 'ncps: unknown upstream URL scheme "ftp:"'],
    ["bad environment value", ["serve"], { CACHE_UPSTREAM_DIALER_TIMEOUT: "3x" }, 'ncps: CACHE_UPSTREAM_DIALER_TIMEOUT: invalid duration "3x"'],
    ["bad config file", ["serve", "--config", badConfig], {}, `ncps: config file ${badConfig}: `],
    ["missing config file", ["migrate", "status"], { NCPS_CONFIG_FILE: join(home, "nope.toml") }, "ncps: config file not found:"],
  ];

  for (const [name, args, env, expected] of cases) {
    test(name, async () => {
      const { stdout, stderr, status } = await ncps(args, env);
      expect(status).toBe(1);
      expect(stdout).toBe("");
      expect(stderr).toStartWith(expected);
      expect(stderr.split("\n")).toEqual([expect.any(String), ""]); // exactly one line
      expect(stderr).not.toMatch(/\bat .*:\d+/); // no stack frame
    });
  }
});
