/** Every flag, environment variable and config key of the Go ncps (test/fixtures/go-options.json,
 * extracted from its sources by scripts/extract-go-options.ts: see the fixture's `source` for
 * the commit) is accepted: a Go command line, env file and config file load with no error,
 * and each Go name this ncps does not implement costs exactly one warning. */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { commandLocalFlags, rootCommand } from "../../src/cli/commands.ts";
import type { CliCommand } from "../../src/cli/commands.ts";
import { parseFlags } from "../../src/cli/flags.ts";
import { defaultUpstreamPublicKey, goOnlyOptions, options } from "../../src/config/options.ts";
import { testHome } from "./config-helpers.ts";

interface GoFlag {
  flag: string;
  type: string;
  env: string[];
  configKey?: string;
}
const fixture = JSON.parse(readFileSync(join(import.meta.dir, "..", "fixtures", "go-options.json"), "utf8")) as {
  source: { commit: string; version: string };
  commands: Record<string, GoFlag[]>;
  /** Flags of earlier Go releases gone at the commit above. */
  removed: GoFlag[];
};
const allGo: GoFlag[] = [...Object.values(fixture.commands).flat(), ...fixture.removed];

const { home, writeTemp, load } = testHome();
const netrc = writeTemp("netrc", "machine up.test login u password p\n");

/** A value the Go ncps would accept for this name, valid for this ncps too. */
function sample(goFlag: GoFlag): string {
  const byFlag: Record<string, string> = {
    config: writeTemp("yaml", "{}\n"),
    "log-level": "debug",
    "otel-grpc-url": "http://127.0.0.1:4317",
    "cache-database-url": `sqlite:${join(home, "db.sqlite")}`,
    "cache-storage-local": join(home, "data"),
    "cache-data-path": join(home, "data"),
    "cache-storage-s3-bucket": "bucket",
    "cache-storage-s3-endpoint": "http://127.0.0.1:9000",
    "cache-upstream-url": "https://cache.nixos.org",
    "upstream-cache": "https://cache.nixos.org",
    "cache-upstream-public-key": defaultUpstreamPublicKey,
    "upstream-public-key": defaultUpstreamPublicKey,
    "cache-trusted-upload-key": defaultUpstreamPublicKey,
    "cache-redis-addrs": "127.0.0.1:6379",
    "cache-lock-backend": "redis",
    "cache-max-size": "10G",
    "cache-lru-schedule": "0 2 * * *",
    "cache-lru-schedule-timezone": "Europe/Berlin",
    "cache-cdc-lazy-recovery-schedule": "@every 5m",
    "cache-cdc-lazy-cleanup-schedule": "@every 1h",
    "netrc-file": netrc,
    "server-addr": ":8501",
    "pprof-addr": ":6060",
    "cache-temp-path": "/tmp",
  };
  const byType: Record<string, string> = { Bool: "true", Duration: "10s", Int: "4", Uint32: "4096", String: "x", StringSlice: "x" };
  const value = byFlag[goFlag.flag] ?? byType[goFlag.type];
  if (value === undefined) throw new Error(`no sample value for --${goFlag.flag} (${goFlag.type})`);
  return value;
}

/** One S3 or one local storage: both at once is an error in either ncps. */
const isS3 = (f: GoFlag) => f.flag.startsWith("cache-storage-s3-");
const unique = <T>(list: T[], key: (t: T) => string) => [...new Map(list.map((t) => [key(t), t])).values()];

const ourFlags = new Set([...options.flatMap((o) => [o.flag, ...(o.deprecated?.flags ?? [])]), ...goOnlyOptions.map((o) => o.flag), ...commandLocalFlags]);
const ourEnv = new Set([...options.flatMap((o) => [...o.env, ...(o.deprecated?.env ?? [])]), ...goOnlyOptions.flatMap((o) => o.env)]);
const ourKeys = new Set(
  [...options.flatMap((o) => [o.configKey, ...(o.deprecated?.configKeys ?? [])]), ...goOnlyOptions.map((o) => o.configKey)].filter((k) => k !== undefined),
);

function ourCommand(goCommand: string): { command: CliCommand; name: string } {
  const path = goCommand === "ncps" ? [] : goCommand === "migrate" ? ["migrate", "up"] : [goCommand];
  let command = rootCommand;
  for (const name of path) command = command.subCommands!.find((c) => c.name === name)!;
  return { command, name: ["ncps", ...path].join(" ") };
}

test("the fixture names its Go commit and holds the Go commands' flags", () => {
  expect(fixture.source.commit).toMatch(/^[0-9a-f]{40}$/);
  expect(Object.keys(fixture.commands)).toEqual(["ncps", "serve", "migrate", "fsck", "migrate-narinfo", "migrate-nar-to-chunks", "migrate-chunks-to-nar"]);
  expect(allGo.length).toBeGreaterThan(150);
});

test("flags of earlier Go releases are accepted by serve", () => {
  const serve = rootCommand.subCommands!.find((c) => c.name === "serve")!;
  const { values } = parseFlags(fixture.removed.flatMap((f) => (f.type === "Bool" ? [`--${f.flag}`] : [`--${f.flag}`, sample(f)])), serve.flags, "ncps serve");
  for (const f of fixture.removed) expect(values[f.flag]).toBeDefined();
});

describe("every Go name has a place in the option table", () => {
  test.each(unique(allGo, (f) => f.flag).map((f) => [f.flag]))("--%s", (flag) => expect(ourFlags.has(flag)).toBe(true));
  test.each([...new Set(allGo.flatMap((f) => f.env))].map((e) => [e]))("%s", (env) => expect(ourEnv.has(env)).toBe(true));
  test.each([...new Set(allGo.flatMap((f) => f.configKey ?? []))].map((k) => [k]))("config key %s", (key) => expect(ourKeys.has(key)).toBe(true));
});

describe("each Go command's flags are accepted by the same command here", () => {
  for (const [goCommand, flags] of Object.entries(fixture.commands)) {
    // the Go root flags are accepted by every command
    const commands = goCommand === "ncps" ? ["ncps", ...Object.keys(fixture.commands).filter((c) => c !== "ncps")] : [goCommand];
    for (const target of commands) {
      const { command, name } = ourCommand(target);
      test(`${name} accepts the flags of Go's ${goCommand === "ncps" ? "root command" : `ncps ${goCommand}`}`, () => {
        const tokens = flags.flatMap((f) => (f.type === "Bool" ? [`--${f.flag}`] : [`--${f.flag}`, sample(f)]));
        const { values, positionals } = parseFlags(tokens, command.flags, name);
        expect(positionals).toEqual([]);
        for (const f of flags) expect(values[f.flag]).toBeDefined();
      });
    }
  }
});

/** Go-only options set among `goFlags`, by flag name. */
const goOnlySet = (goFlags: GoFlag[]) => goOnlyOptions.filter((o) => goFlags.some((f) => f.flag === o.flag));

function expectOneWarningEach(warnings: string[], goFlags: GoFlag[]) {
  for (const o of goOnlySet(goFlags)) {
    expect(warnings.filter((w) => w.includes(`${o.flag} (a Go ncps option)`) || o.env.some((e) => w.startsWith(`${e} (a Go`)) || (o.configKey !== undefined && w.includes(`: ${o.configKey} (a Go`)))).toHaveLength(1);
  }
  expect(warnings.filter((w) => w.includes("unknown"))).toEqual([]);
}

describe("a Go deployment's settings load with no error", () => {
  // every serve flag (and the root's), once with local storage, once with S3
  const serveFlags = unique([...fixture.removed, ...fixture.commands.ncps!, ...fixture.commands.serve!, ...fixture.commands.fsck!, ...fixture.commands["migrate-nar-to-chunks"]!, ...fixture.commands["migrate-chunks-to-nar"]!], (f) => f.flag)
    .filter((f) => f.flag !== "config");
  const variants: [string, GoFlag[]][] = [
    ["local storage", serveFlags.filter((f) => !isS3(f))],
    ["S3 storage", serveFlags.filter((f) => f.flag !== "cache-storage-local" && f.flag !== "cache-data-path")],
  ];

  for (const [storage, goFlags] of variants) {
    test(`a command line with every Go flag (${storage})`, async () => {
      const args = Object.fromEntries(goFlags.filter((f) => !commandLocalFlags.has(f.flag)).map((f) => [f.flag, f.type === "Bool" ? true : f.type === "StringSlice" ? [sample(f)] : sample(f)]));
      const { config, warnings } = await load(args);
      expect(config.cacheLockDownloadTtl).toBe(10_000);
      expectOneWarningEach(warnings, goFlags.filter((f) => !commandLocalFlags.has(f.flag)));
    });

    test(`an env file with every Go variable (${storage})`, async () => {
      const env = Object.fromEntries(goFlags.flatMap((f) => f.env.map((e) => [e, sample(f)])));
      const { config, warnings } = await load({}, env);
      expect(config.cacheLockDownloadTtl).toBe(10_000);
      expectOneWarningEach(warnings, goFlags.filter((f) => f.env.length > 0));
    });

    test(`a config file with every Go key (${storage})`, async () => {
      const data: Record<string, unknown> = {};
      for (const f of goFlags) {
        if (!f.configKey) continue;
        const parts = f.configKey.split(".");
        let node = data;
        for (const part of parts.slice(0, -1)) node = (node[part] ??= {}) as Record<string, unknown>;
        node[parts[parts.length - 1]!] = f.type === "Bool" ? true : f.type === "StringSlice" ? [sample(f)] : sample(f);
      }
      data.cache = { ...(data.cache as object), database: { ...((data.cache as Record<string, object>).database), url: sample({ flag: "cache-database-url", type: "String", env: [] }) } };
      const { config, warnings } = await load({ config: writeTemp("yaml", JSON.stringify(data)) });
      // Go's config key for the download lock TTL
      expect(config.cacheLockDownloadTtl).toBe(10_000);
      expectOneWarningEach(warnings, goFlags.filter((f) => f.configKey !== undefined));
    });
  }
});
