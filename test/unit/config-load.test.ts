import { describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../../src/config/load.ts";
import { defaultUpstreamPublicKey } from "../../src/config/options.ts";
import type { Config } from "../../src/config/options.ts";
import { testHome } from "./config-helpers.ts";

const { home, load, loadError, writeTemp } = testHome();

describe("defaults", () => {
  test("a non-root user with nothing set", async () => {
    const { config, warnings } = await load();
    // toMatchObject: later issues add options; each checks its own defaults.
    expect(config).toMatchObject({
      logLevel: "info",
      cacheHostname: "testhost",
      cacheStorageLocal: join(home, ".local", "share", "ncps"),
      cacheDatabaseUrl: `sqlite:${join(home, ".local", "share", "ncps", "db", "db.sqlite")}`,
      cacheTempPath: "/tmp",
      cacheSignNarinfo: true,
      cachePriority: 10,
      cacheUpstreamUrls: ["https://cache.nixos.org"],
      cacheUpstreamPublicKeys: [defaultUpstreamPublicKey],
      cacheUpstreamDialerTimeout: 3000,
      cacheUpstreamResponseHeaderTimeout: 3000,
      cacheUpstreamNegativeTtl: 60_000,
      serverAddr: ":8501",
      cacheAllowPutVerb: false,
      cacheAllowDeleteVerb: false,
      cacheMaxUploadSize: 64 * 2 ** 30,
      cacheRequireTrustedSignature: false,
      cacheTrustedUploadKeys: [],
    });
    expect(config.cacheGetToken).toBeUndefined();
    expect(config.cachePutToken).toBeUndefined();
    expect(warnings).toEqual([]);
  });

  test("root stores in /var/lib/ncps", async () => {
    const { config } = await load({}, {}, { isRoot: true });
    expect(config.cacheStorageLocal).toBe("/var/lib/ncps");
    expect(config.cacheDatabaseUrl).toBe("sqlite:/var/lib/ncps/db/db.sqlite");
  });

  test("XDG_DATA_HOME moves the data directory, and the database follows the storage", async () => {
    const { config } = await load({}, { XDG_DATA_HOME: "/srv/data" });
    expect(config.cacheStorageLocal).toBe("/srv/data/ncps");
    expect(config.cacheDatabaseUrl).toBe("sqlite:/srv/data/ncps/db/db.sqlite");
    const moved = await load({ "cache-storage-local": "/elsewhere" });
    expect(moved.config.cacheDatabaseUrl).toBe("sqlite:/elsewhere/db/db.sqlite");
  });

  test("the cache.nixos.org key is trusted only with the default upstream list", async () => {
    const other = await load({ "cache-upstream-url": ["https://cache.nixos.org", "https://other.example"] });
    expect(other.config.cacheUpstreamPublicKeys).toEqual([]);
  });

  test("~/.netrc is the default netrc file only when it exists", async () => {
    const otherHome = join(home, "home-with-netrc");
    mkdirSync(otherHome);
    const asOtherUser = () => load({}, { HOME: otherHome }, { homeDir: otherHome });
    expect((await asOtherUser()).config.netrcFile).toBeUndefined();
    writeFileSync(join(otherHome, ".netrc"), "machine example.org login a password b\n");
    expect((await asOtherUser()).config.netrcFile).toBe(join(otherHome, ".netrc"));
  });

  test("TMPDIR is the default temp path", async () => {
    const env = { HOME: home, XDG_CONFIG_HOME: join(home, "xdg-config"), TMPDIR: "/var/tmp/ncps-test/" };
    const config = await loadConfig({}, env, { system: { isRoot: false, homeDir: home, hostname: "h" } });
    expect(config.cacheTempPath).toBe("/var/tmp/ncps-test");
  });
});

// One option per type, each set at every level: the higher level must win.
interface PrecedenceCase {
  name: string;
  key: keyof Config;
  flag: [string, unknown];
  fileYaml: string; // the YAML line(s) setting it
  env: [string, string];
  expected: { flag: unknown; file: unknown; env: unknown; default: unknown };
}

const precedenceCases: PrecedenceCase[] = [
  {
    name: "string",
    key: "cacheHostname",
    flag: ["cache-hostname", "flag.example"],
    fileYaml: "cache:\n  hostname: file.example\n",
    env: ["CACHE_HOSTNAME", "env.example"],
    expected: { flag: "flag.example", file: "file.example", env: "env.example", default: "testhost" },
  },
  {
    name: "string[]",
    key: "cacheUpstreamUrls",
    flag: ["cache-upstream-url", ["https://flag1.example", "https://flag2.example"]],
    fileYaml: "cache:\n  upstream:\n    urls:\n      - https://file.example\n",
    env: ["CACHE_UPSTREAM_URLS", "https://env1.example,https://env2.example"],
    expected: {
      flag: ["https://flag1.example", "https://flag2.example"],
      file: ["https://file.example"],
      env: ["https://env1.example", "https://env2.example"],
      default: ["https://cache.nixos.org"],
    },
  },
  {
    // Two values only, so the levels alternate: default true, env false, file true, flag false.
    name: "boolean",
    key: "cacheSignNarinfo",
    flag: ["cache-sign-narinfo", false],
    fileYaml: "cache:\n  sign-narinfo: true\n",
    env: ["CACHE_SIGN_NARINFO", "false"],
    expected: { flag: false, file: true, env: false, default: true },
  },
  {
    name: "integer",
    key: "cachePriority",
    flag: ["cache-priority", "1"],
    fileYaml: "cache:\n  priority: 2\n",
    env: ["CACHE_PRIORITY", "3"],
    expected: { flag: 1, file: 2, env: 3, default: 10 },
  },
  {
    name: "duration",
    key: "cacheUpstreamDialerTimeout",
    flag: ["cache-upstream-dialer-timeout", "1s"],
    fileYaml: "cache:\n  upstream:\n    dialer-timeout: 2m\n",
    env: ["CACHE_UPSTREAM_DIALER_TIMEOUT", "500ms"],
    expected: { flag: 1000, file: 120_000, env: 500, default: 3000 },
  },
  {
    name: "enumeration",
    key: "logLevel",
    flag: ["log-level", "debug"],
    fileYaml: "log:\n  level: error\n",
    env: ["LOG_LEVEL", "warn"],
    expected: { flag: "debug", file: "error", env: "warn", default: "info" },
  },
];

describe("precedence: flag > config file > environment > default", () => {
  for (const c of precedenceCases) {
    test(c.name, async () => {
      const file = writeTemp("yaml", c.fileYaml);
      const [flagName, flagValue] = c.flag;
      const [envName, envValue] = c.env;
      expect((await load()).config[c.key]).toEqual(c.expected.default as never);
      expect((await load({}, { [envName]: envValue })).config[c.key]).toEqual(c.expected.env as never);
      expect((await load({ config: file }, { [envName]: envValue })).config[c.key]).toEqual(c.expected.file as never);
      expect((await load({ config: file, [flagName]: flagValue }, { [envName]: envValue })).config[c.key]).toEqual(
        c.expected.flag as never,
      );
    });
  }

  test("an empty value counts as not set", async () => {
    const file = writeTemp("yaml", 'cache:\n  hostname: ""\n  secret-key-path: ""\n');
    const { config } = await load({ config: file }, { CACHE_HOSTNAME: "env.example", CACHE_PRIORITY: "" });
    expect(config.cacheHostname).toBe("env.example");
    expect(config.cacheSecretKeyPath).toBeUndefined();
    expect(config.cachePriority).toBe(10);
  });

  test("citty-style camelCase keys are read too", async () => {
    const { config } = await load({ cacheHostname: "camel.example" });
    expect(config.cacheHostname).toBe("camel.example");
  });
});

describe("config files", () => {
  const expected = {
    cacheHostname: "ncps.example.org",
    cacheUpstreamUrls: ["https://cache.nixos.org", "https://nix-community.cachix.org"],
    cacheUpstreamPublicKeys: [
      "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
      "nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs=",
    ],
    cacheUpstreamResponseHeaderTimeout: 90_000,
    cacheSignNarinfo: false,
    cachePriority: 30,
    serverAddr: "127.0.0.1:9000",
    logLevel: "warn",
  };

  const yaml = `
log:
  level: warn
cache:
  hostname: ncps.example.org
  sign-narinfo: false
  priority: 30
  upstream:
    urls:
      - https://cache.nixos.org
      - https://nix-community.cachix.org
    public-keys:
      - cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=
      - nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs=
    response-header-timeout: 1m30s
server:
  addr: "127.0.0.1:9000"
`;
  const toml = `
[log]
level = "warn"

[cache]
hostname = "ncps.example.org"
sign-narinfo = false
priority = 30

[cache.upstream]
urls = ["https://cache.nixos.org", "https://nix-community.cachix.org"]
public-keys = [
  "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
  "nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs=",
]
response-header-timeout = "1m30s"

[server]
addr = "127.0.0.1:9000"
`;
  const json = JSON.stringify({
    log: { level: "warn" },
    cache: {
      hostname: "ncps.example.org",
      "sign-narinfo": false,
      priority: 30,
      upstream: {
        urls: expected.cacheUpstreamUrls,
        "public-keys": expected.cacheUpstreamPublicKeys,
        "response-header-timeout": "1m30s",
      },
    },
    server: { addr: "127.0.0.1:9000" },
  });

  for (const [ext, text] of [["yaml", yaml], ["yml", yaml], ["toml", toml], ["json", json]] as const) {
    test(`.${ext}`, async () => {
      const path = writeTemp(ext, text);
      const { config, warnings } = await load({ config: path });
      expect(config).toMatchObject({ ...expected, configFile: path });
      expect(warnings).toEqual([]);
    });
  }

  test("NCPS_CONFIG_FILE names the file", async () => {
    const path = writeTemp("yaml", yaml);
    expect((await load({}, { NCPS_CONFIG_FILE: path })).config.cacheHostname).toBe("ncps.example.org");
  });

  test("$XDG_CONFIG_HOME/ncps/config.yaml is read when it exists", async () => {
    const xdg = join(home, "xdg-with-config");
    mkdirSync(join(xdg, "ncps"), { recursive: true });
    writeFileSync(join(xdg, "ncps", "config.yaml"), "cache:\n  hostname: from-xdg.example\n");
    const { config } = await load({}, { XDG_CONFIG_HOME: xdg });
    expect(config.cacheHostname).toBe("from-xdg.example");
    expect(config.configFile).toBe(join(xdg, "ncps", "config.yaml"));
  });

  test("a named file that does not exist is an error; the default one may be absent", async () => {
    const err = await loadError({ config: join(home, "missing.yaml") });
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toBe(`config file not found: ${join(home, "missing.yaml")}`);
    expect((await load()).config.configFile).toBeUndefined();
  });

  test("unknown keys are ignored with one warning line naming them", async () => {
    const path = writeTemp(
      "yaml",
      "analytics:\n  reporting:\n    enabled: false\n  colour: blue\ncache:\n  hostname: h.example\n  lru:\n    schedule: '0 0 * * *'\n  storage:\n    s3:\n      use-ssl: true\n      tint: red\nextra: 1\n",
    );
    const { config, warnings } = await load({ config: path });
    expect(config.cacheHostname).toBe("h.example");
    expect(config.cacheLruSchedule).toBe("0 0 * * *"); // known now: not among the unknown keys
    // Go ncps keys ncps does not implement are known: each costs its own warning
    expect(warnings).toEqual([
      `${path}: ignoring unknown keys: analytics.colour, cache.storage.s3.tint, extra`,
      `${path}: analytics.reporting.enabled (a Go ncps option) is ignored: ncps reports no usage statistics to anyone`,
      `${path}: cache.storage.s3.use-ssl (a Go ncps option) is ignored: ncps takes http:// or https:// from --cache-storage-s3-endpoint`,
    ]);
  });

  test("a Go ncps config file with deprecated keys loads", async () => {
    const path = writeTemp(
      "yaml",
      `log:\n  level: error\nprometheus:\n  enabled: true\ncache:\n  hostname: go.example\n  data-path: /var/lib/go-ncps\n  upstream:\n    caches:\n      - https://cache.nixos.org\n      - https://nix-community.cachix.org\n`,
    );
    const { config, warnings } = await load({ config: path });
    expect(config.logLevel).toBe("error");
    expect(config.cacheStorageLocal).toBe("/var/lib/go-ncps");
    expect(config.cacheDatabaseUrl).toBe("sqlite:/var/lib/go-ncps/db/db.sqlite");
    expect(config.cacheUpstreamUrls).toEqual(["https://cache.nixos.org", "https://nix-community.cachix.org"]);
    expect(config.prometheusEnabled).toBe(true);
    expect(warnings).toEqual([
      `${path}: cache.data-path is deprecated; use cache.storage.local`,
      `${path}: cache.upstream.caches is deprecated; use cache.upstream.urls`,
    ]);
  });

  for (const [ext, text] of [["yaml", "cache: [\n"], ["toml", "cache = \n"], ["json", "{cache:"]] as const) {
    test(`a malformed .${ext} file is one ConfigError line naming the file`, async () => {
      const path = writeTemp(ext, text);
      const err = await loadError({ config: path });
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.message).toStartWith(`config file ${path}: `);
      expect(err.message).not.toContain("\n");
    });
  }

  test("an unknown extension is refused", async () => {
    const err = await loadError({ config: writeTemp("conf", "x=1") });
    expect(err.message).toContain("unknown format (name it .yaml, .yml, .toml or .json)");
  });

  test("a value of the wrong shape names the key", async () => {
    const path = writeTemp("yaml", "cache:\n  hostname: [a, b]\n");
    expect((await loadError({ config: path })).message).toStartWith(`${path}: cache.hostname: expected a string`);
    const bareNumber = writeTemp("json", '{"cache": {"upstream": {"dialer-timeout": 3}}}');
    expect((await loadError({ config: bareNumber })).message).toContain('expected a duration string like "3s"');
  });

  test("an empty YAML file is an empty config", async () => {
    const { config } = await load({ config: writeTemp("yaml", "") });
    expect(config.cacheHostname).toBe("testhost");
  });
});

describe("deprecated names", () => {
  test("--upstream-cache sets the upstream URLs, with a warning", async () => {
    const { config, warnings } = await load({ "upstream-cache": ["https://old.example"] });
    expect(config.cacheUpstreamUrls).toEqual(["https://old.example"]);
    expect(warnings).toEqual(["--upstream-cache is deprecated; use --cache-upstream-url"]);
  });

  test("the current flag wins over the deprecated one", async () => {
    const { config, warnings } = await load({
      "cache-upstream-url": ["https://new.example"],
      "upstream-cache": ["https://old.example"],
    });
    expect(config.cacheUpstreamUrls).toEqual(["https://new.example"]);
    expect(warnings).toEqual([
      "--upstream-cache is deprecated (use --cache-upstream-url) and ignored: --cache-upstream-url is set",
    ]);
  });

  test("a deprecated flag still beats the current environment variable", async () => {
    const { config } = await load({ "upstream-cache": "https://old.example" }, { CACHE_UPSTREAM_URLS: "https://env.example" });
    expect(config.cacheUpstreamUrls).toEqual(["https://old.example"]);
  });

  test("CACHE_DATA_PATH, UPSTREAM_CACHES, UPSTREAM_PUBLIC_KEYS and the old timeouts", async () => {
    const key = "nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs=";
    const { config, warnings } = await load(
      {},
      {
        CACHE_DATA_PATH: "/data/old",
        UPSTREAM_CACHES: "https://a.example https://b.example",
        UPSTREAM_PUBLIC_KEYS: key,
        UPSTREAM_DIALER_TIMEOUT: "7s",
        UPSTREAM_RESPONSE_HEADER_TIMEOUT: "8s",
      },
    );
    expect(config.cacheStorageLocal).toBe("/data/old");
    expect(config.cacheUpstreamUrls).toEqual(["https://a.example", "https://b.example"]);
    expect(config.cacheUpstreamPublicKeys).toEqual([key]);
    expect(config.cacheUpstreamDialerTimeout).toBe(7000);
    expect(config.cacheUpstreamResponseHeaderTimeout).toBe(8000);
    expect(warnings).toHaveLength(5);
    expect(warnings).toContain("CACHE_DATA_PATH is deprecated; use CACHE_STORAGE_LOCAL");
  });

  test("--cache-data-path", async () => {
    const { config } = await load({ "cache-data-path": "/data/flag" }, { CACHE_STORAGE_LOCAL: "/data/env" });
    expect(config.cacheStorageLocal).toBe("/data/flag");
  });
});

describe("lists", () => {
  const urls = ["https://a.example", "https://b.example", "https://c.example"];
  for (const text of [
    "https://a.example,https://b.example,https://c.example",
    "https://a.example https://b.example https://c.example",
    " https://a.example, https://b.example,,\n https://c.example ",
  ]) {
    test(`CACHE_UPSTREAM_URLS=${JSON.stringify(text)}`, async () => {
      expect((await load({}, { CACHE_UPSTREAM_URLS: text })).config.cacheUpstreamUrls).toEqual(urls);
    });
  }

  test("a repeated flag keeps every value, and a comma inside one value splits too", async () => {
    const { config } = await load({ "cache-upstream-url": ["https://a.example", "https://b.example,https://c.example"] });
    expect(config.cacheUpstreamUrls).toEqual(urls);
  });

  test("a single string in a config file is split like the environment", async () => {
    const path = writeTemp("yaml", "cache:\n  upstream:\n    urls: https://a.example, https://b.example\n");
    expect((await load({ config: path })).config.cacheUpstreamUrls).toEqual(urls.slice(0, 2));
  });
});

describe("sizes", () => {
  test("bytes, binary units and the size type's errors", async () => {
    const { config } = await load({ "cache-max-upload-size": "10G" });
    expect(config.cacheMaxUploadSize).toBe(10 * 2 ** 30);
    expect((await load({ "cache-max-upload-size": "1500" })).config.cacheMaxUploadSize).toBe(1500);
    expect((await load({ "cache-max-upload-size": "512MiB" })).config.cacheMaxUploadSize).toBe(512 * 2 ** 20);
    expect((await load({ "cache-max-upload-size": "1.5k" })).config.cacheMaxUploadSize).toBe(1536);
    const err = await loadError({ "cache-max-upload-size": "lots" });
    expect(err.message).toContain('invalid size "lots"');
  });

  test("require-trusted-signature without a key refuses to start", async () => {
    const err = await loadError({ "cache-require-trusted-signature": true });
    expect(err.message).toBe("--cache-require-trusted-signature needs at least one --cache-trusted-upload-key");
  });
});

describe("durations", () => {
  test("Go syntax is read as milliseconds", async () => {
    const { config } = await load(
      { "cache-upstream-dialer-timeout": "1m30s" },
      { CACHE_UPSTREAM_RESPONSE_HEADER_TIMEOUT: "250ms", CACHE_UPSTREAM_NEGATIVE_TTL: "0" },
    );
    expect(config.cacheUpstreamDialerTimeout).toBe(90_000);
    expect(config.cacheUpstreamResponseHeaderTimeout).toBe(250);
    expect(config.cacheUpstreamNegativeTtl).toBe(0);
  });

  test("a bad duration names where it came from", async () => {
    expect((await loadError({}, { CACHE_UPSTREAM_NEGATIVE_TTL: "10" })).message).toBe(
      'CACHE_UPSTREAM_NEGATIVE_TTL: invalid duration "10" (use Go syntax like 3s, 500ms, 1m30s)',
    );
    expect((await loadError({ "cache-upstream-dialer-timeout": "-1s" })).message).toBe(
      '--cache-upstream-dialer-timeout: duration "-1s" is negative',
    );
  });
});
