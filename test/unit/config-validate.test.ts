import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ConfigError } from "../../src/config/load.ts";
import { testHome } from "./config-helpers.ts";

const { home, load, loadError } = testHome();

/** Each bad input must fail with a ConfigError of one line containing `expected`. */
const badInputs: [string, Record<string, unknown>, Record<string, string>, string][] = [
  ["ftp upstream", { "cache-upstream-url": ["ftp://mirror.example"] }, {}, 'unknown upstream URL scheme "ftp:" in "ftp://mirror.example" (use http or https)'],
  ["file upstream from the environment", {}, { CACHE_UPSTREAM_URLS: "https://ok.example,file:///srv/cache" }, 'unknown upstream URL scheme "file:"'],
  ["upstream that is no URL", { "cache-upstream-url": ["cache.nixos.org"] }, {}, 'invalid upstream URL "cache.nixos.org"'],
  ["empty upstream list", { "cache-upstream-url": [","] }, {}, "at least one --cache-upstream-url is required"],
  ["key without a name", { "cache-upstream-public-key": ["6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="] }, {}, "invalid upstream public key"],
  ["key that is not base64", { "cache-upstream-public-key": ["k-1:not*base64"] }, {}, 'invalid upstream public key "k-1:not*base64"'],
  ["key of the wrong length", { "cache-upstream-public-key": ["k-1:AAAA"] }, {}, "expected name:base64 of 32 bytes"],
  ["server addr without a colon", { "server-addr": "8501" }, {}, 'invalid --server-addr "8501" (use host:port or :port)'],
  ["server addr port out of range", {}, { SERVER_ADDR: "localhost:70000" }, 'invalid --server-addr "localhost:70000"'],
  ["server addr with a bare IPv6 host", { "server-addr": "::1:80" }, {}, "invalid --server-addr"],
  ["log level", {}, { LOG_LEVEL: "verbose" }, 'unknown log level "verbose" (use debug, info, warn, error)'],
  ["database scheme", { "cache-database-url": "redis://localhost" }, {}, 'invalid --cache-database-url: unsupported database URL scheme "redis"'],
  ["sqlite without a path", { "cache-database-url": "sqlite:" }, {}, "invalid --cache-database-url: sqlite URL has no file path"],
  ["postgres without a database", { "cache-database-url": "postgres://u:pw@db:5432" }, {}, "invalid --cache-database-url: postgres URL has no database name"],
  ["redis address without a port", { "cache-redis-addrs": ["redis.internal"] }, {}, 'invalid --cache-redis-addrs entry: invalid redis address "redis.internal"'],
  ["advertise URL with a path", { "cache-advertise-url": "http://ncps-0.ncps:8501/cache" }, {}, 'invalid --cache-advertise-url "http://ncps-0.ncps:8501/cache": a path, query or fragment is not allowed'],
  ["advertise URL with credentials", {}, { CACHE_ADVERTISE_URL: "http://u:p@ncps-0:8501" }, "credentials are not allowed"],
  ["advertise URL of another scheme", { "cache-advertise-url": "ftp://ncps-0:21" }, {}, "not http or https"],
  ["advertise URL that is no URL", { "cache-advertise-url": "ncps-0:8501" }, {}, "invalid --cache-advertise-url"],
  // other replicas read a holder note (this URL and a MAC) only up to 16 KiB
  ["advertise URL too long to be followed", { "cache-advertise-url": `http://${"a".repeat(1100)}:8501` }, {}, "longer than 1024 characters"],
  ["negative priority", { "cache-priority": "-1" }, {}, "--cache-priority must be a whole number >= 0"],
  ["priority that is no number", {}, { CACHE_PRIORITY: "high" }, 'CACHE_PRIORITY: invalid integer "high"'],
  ["boolean that is no boolean", {}, { CACHE_SIGN_NARINFO: "maybe" }, 'CACHE_SIGN_NARINFO: invalid boolean "maybe"'],
  ["missing netrc file", { "netrc-file": "/nonexistent/netrc" }, {}, "netrc file not found: /nonexistent/netrc"],
];

describe("each validation error is one ConfigError line", () => {
  for (const [name, args, env, expected] of badInputs) {
    test(name, async () => {
      const err = await loadError(args, env);
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.message).toContain(expected);
      expect(err.message).not.toContain("\n");
    });
  }
});

test("an upstream URL's password appears in no configuration error", async () => {
  const up = "https://alice:s3cret@cache.example.org";
  for (const [args, expected] of [
    [{ "cache-upstream-url": ["https://alice:s3cret@cache.example.org?priority=x"] }, "priority must be a whole number"],
    [{ "cache-upstream-url": ["https://alice:s3cret@"] }, "invalid upstream URL"],
    [{ "cache-upstream-url": ["https://other.example.org"], "cache-upstream-accept-unsigned": [up] }, "is not one of the --cache-upstream-url upstreams"],
    [{ "cache-upstream-url": ["https://other.example.org"], "cache-upstream-proxy": [`${up}=http://p:3128`] }, "is not one of the --cache-upstream-url upstreams"],
    [{ "cache-upstream-url": [up], "cache-upstream-proxy": [`${up}=http://p:3128`, `${up}=http://q:3128`] }, "more than one proxy"],
  ] as const) {
    const err = await loadError(args, {});
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toContain(expected);
    expect(err.message).not.toContain("s3cret");
  }
});

describe("accepted values", () => {
  test("server addresses", async () => {
    for (const addr of [":8501", "0.0.0.0:8501", "localhost:80", "[::1]:8080", "[::]:0"]) {
      expect((await load({ "server-addr": addr })).config.serverAddr).toBe(addr);
    }
  });

  test("advertise URLs", async () => {
    for (const url of ["http://ncps-0.ncps.default.svc:8501", "https://10.0.0.7", "http://[fd00::7]:8501/"]) {
      expect((await load({ "cache-advertise-url": url })).config.cacheAdvertiseUrl).toBe(url);
    }
  });

  test("database URLs", async () => {
    for (const url of ["sqlite:/var/lib/ncps/db.sqlite", "postgres://u:p@db/ncps", "postgresql://db/ncps", "mysql://u@db/ncps"]) {
      expect((await load({ "cache-database-url": url })).config.cacheDatabaseUrl).toBe(url);
    }
  });

  test("the Go ncps's zerolog level names map to ours", async () => {
    expect((await load({}, { LOG_LEVEL: "trace" })).config.logLevel).toBe("debug");
    expect((await load({}, { LOG_LEVEL: "WARNING" })).config.logLevel).toBe("warn");
    expect((await load({}, { LOG_LEVEL: "fatal" })).config.logLevel).toBe("error");
  });

  test("an existing netrc file", async () => {
    const path = join(home, "netrc-exists");
    await Bun.write(path, "default login a password b\n");
    expect((await load({ "netrc-file": path })).config.netrcFile).toBe(path);
  });
});
