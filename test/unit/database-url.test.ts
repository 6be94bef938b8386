import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { DatabaseUrlError, parseDatabaseUrl, type ServerUrl } from "../../src/db/database-url.ts";

function server(url: string): ServerUrl {
  const parsed = parseDatabaseUrl(url);
  if (parsed.dialect === "sqlite") throw new Error(`expected a server URL, got sqlite`);
  return parsed;
}

function parseError(url: string): DatabaseUrlError {
  try {
    parseDatabaseUrl(url);
  } catch (err) {
    expect(err).toBeInstanceOf(DatabaseUrlError);
    return err as DatabaseUrlError;
  }
  throw new Error(`expected ${url} to be rejected`);
}

describe("sqlite URLs", () => {
  test("sqlite:/abs/path", () => {
    expect(parseDatabaseUrl("sqlite:/var/lib/ncps/db/db.sqlite")).toEqual({
      dialect: "sqlite",
      path: "/var/lib/ncps/db/db.sqlite",
      redacted: "sqlite:/var/lib/ncps/db/db.sqlite",
    });
  });

  test("sqlite:///abs/path (empty authority)", () => {
    expect(parseDatabaseUrl("sqlite:///var/lib/ncps/db.sqlite")).toMatchObject({ dialect: "sqlite", path: "/var/lib/ncps/db.sqlite" });
  });

  test("sqlite3: is an alias, as in Go ncps", () => {
    expect(parseDatabaseUrl("sqlite3:/tmp/x.db")).toMatchObject({ dialect: "sqlite", path: "/tmp/x.db" });
  });

  test("sqlite:relative.db resolves against the working directory", () => {
    expect(parseDatabaseUrl("sqlite:data/relative.db")).toMatchObject({ dialect: "sqlite", path: resolve("data/relative.db") });
  });

  test("query parameters (Go driver options) are ignored", () => {
    expect(parseDatabaseUrl("sqlite:/tmp/x.db?_journal_mode=WAL&_fk=1")).toMatchObject({ path: "/tmp/x.db" });
  });

  test("percent-encoded path and :memory:", () => {
    expect(parseDatabaseUrl("sqlite:/tmp/with%20space.db")).toMatchObject({ path: "/tmp/with space.db" });
    expect(parseDatabaseUrl("sqlite::memory:")).toMatchObject({ path: ":memory:" });
  });

  test("bad sqlite URLs", () => {
    expect(parseError("sqlite:").message).toContain("no file path");
    expect(parseError("sqlite://host/db.sqlite").message).toContain("absolute path");
    expect(parseError("sqlite:/tmp/%zz.db").message).toContain("percent-encoding");
  });
});

describe("postgres URLs", () => {
  test("postgres:// with user, password, port and sslmode", () => {
    const u = server("postgres://ncps:s3cret@db.example.com:6543/ncps?sslmode=require&application_name=ncps");
    expect(u).toEqual({
      dialect: "postgres",
      address: { kind: "tcp", host: "db.example.com", port: 6543 },
      database: "ncps",
      user: "ncps",
      password: "s3cret",
      sslmode: "require",
      params: { application_name: "ncps" },
      redacted: "postgres://ncps:***@db.example.com:6543/ncps?sslmode=require&application_name=ncps",
    });
  });

  test("postgresql:// with the default port and no sslmode", () => {
    const u = server("postgresql://postgres@127.0.0.1/test");
    expect(u.address).toEqual({ kind: "tcp", host: "127.0.0.1", port: 5432 });
    expect(u.user).toBe("postgres");
    expect(u.password).toBeNull();
    expect(u.sslmode).toBeNull();
    expect(u.redacted).toBe("postgresql://postgres@127.0.0.1/test");
  });

  test("percent-encoded and unencoded special characters in the password", () => {
    expect(server("postgres://u:p%40ss%2Fw%3Ard@h/db").password).toBe("p@ss/w:rd");
    // forgotten encoding: the last "@" ends the user info
    const u = server("postgres://u:p@ss/w@h/db");
    expect(u.password).toBe("p@ss/w");
    expect(u.address).toEqual({ kind: "tcp", host: "h", port: 5432 });
    expect(u.redacted).not.toContain("p@ss");
  });

  test("IPv6 host", () => {
    expect(server("postgres://u@[::1]:5433/db").address).toEqual({ kind: "tcp", host: "::1", port: 5433 });
  });

  test("postgres+unix:// and postgresql+unix://: socket directory, then database", () => {
    for (const scheme of ["postgres+unix", "postgresql+unix"]) {
      const u = server(`${scheme}:///var/run/postgresql/ncps`);
      expect(u.dialect).toBe("postgres");
      expect(u.address).toEqual({ kind: "unix", socketPath: "/var/run/postgresql", port: 5432 });
      expect(u.database).toBe("ncps");
    }
    const withUser = server("postgres+unix://ncps:pw@/run/postgresql/cache?sslmode=disable");
    expect(withUser).toMatchObject({ user: "ncps", password: "pw", database: "cache", sslmode: "disable" });
    expect(withUser.redacted).toBe("postgres+unix://ncps:***@/run/postgresql/cache?sslmode=disable");
  });

  test("libpq socket form ?host=/dir", () => {
    const u = server("postgres:///ncps?host=/run/postgresql");
    expect(u.address).toEqual({ kind: "unix", socketPath: "/run/postgresql", port: 5432 });
    expect(u.params).toEqual({});
  });

  test("a password query parameter is masked in redacted", () => {
    const u = server("postgres://u@h/db?password=hunter2");
    expect(u.params.password).toBe("hunter2");
    expect(u.redacted).toBe("postgres://u@h/db?password=***");
  });

  test("bad postgres URLs", () => {
    expect(parseError("postgres+unix:///ncps").message).toContain("socket path and a database name");
    expect(parseError("postgres://u:pw@h/db?sslmode=sometimes").message).toContain("invalid sslmode");
    expect(parseError("postgres://u:pw@h:99999/db").message).toContain("invalid port");
    expect(parseError("postgres://u:pw@h:5432").message).toContain("no database name");
    expect(parseError("postgres://u:pw@/db").message).toContain("no host");
    expect(parseError("postgres:/h/db").message).toContain("must start with postgres://");
    expect(parseError("postgres://u:pw@h/a/b").message).toContain("just the database name");
  });
});

describe("mysql URLs", () => {
  test("mysql:// over TCP", () => {
    const u = server("mysql://root:pw@127.0.0.1:3307/test?charset=utf8mb4");
    expect(u).toEqual({
      dialect: "mysql",
      address: { kind: "tcp", host: "127.0.0.1", port: 3307 },
      database: "test",
      user: "root",
      password: "pw",
      sslmode: null,
      params: { charset: "utf8mb4" },
      redacted: "mysql://root:***@127.0.0.1:3307/test?charset=utf8mb4",
    });
    expect(server("mysql://root@localhost/test").address).toEqual({ kind: "tcp", host: "localhost", port: 3306 });
  });

  test("mysql+unix://: socket file, then database", () => {
    const u = server("mysql+unix:///var/run/mysqld/mysqld.sock/ncps");
    expect(u.address).toEqual({ kind: "unix", socketPath: "/var/run/mysqld/mysqld.sock", port: 3306 });
    expect(u.database).toBe("ncps");
  });

  test("mysql:// with ?socket=", () => {
    const u = server("mysql://user:pass@/ncps?socket=/var/run/mysqld/mysqld.sock");
    expect(u.address).toEqual({ kind: "unix", socketPath: "/var/run/mysqld/mysqld.sock", port: 3306 });
    expect(u.params).toEqual({});
    expect(u.redacted).toBe("mysql://user:***@/ncps?socket=/var/run/mysqld/mysqld.sock");
  });

  test("bad mysql URLs", () => {
    expect(parseError("mysql+unix:///ncps").message).toContain("socket path and a database name");
    expect(parseError("mysql+unix://host/sock/db").message).toContain("must not name a host");
    expect(parseError("mysql://u:pw@host:port/db").message).toContain("invalid port");
  });
});

describe("errors", () => {
  test("unknown or missing scheme", () => {
    expect(parseError("redis://localhost/0").message).toContain('unsupported database URL scheme "redis"');
    expect(parseError("/var/lib/ncps/db.sqlite").message).toContain("no scheme");
    expect(parseError("   ").message).toContain("empty");
  });

  test("no error message contains the password, and each is one line", () => {
    const secret = "Sup3rS3cretPw";
    const bad = [
      `postgres://user:${secret}@host:notaport/db`,
      `postgres://user:${secret}/db`, // forgotten "@": the "port" is the password
      `postgres://user:${secret}@host/db?sslmode=bogus`,
      `postgres+unix://user:${secret}@/only`,
      `mysql://user:${secret}@/db`,
      `mysql://user:${secret}%zz@host/db`,
      `mysql+unix://user:${secret}@host/sock/db`,
      `ftp://user:${secret}@host/db`,
      `user:${secret}@host/db`,
    ];
    for (const url of bad) {
      const err = parseError(url);
      expect(err.message).not.toContain(secret);
      expect(err.message).not.toContain("\n");
      expect(err.message.length).toBeGreaterThan(10);
    }
  });

  test("redacted never contains the password", () => {
    const secret = "Sup3rS3cretPw";
    for (const url of [
      `postgres://user:${secret}@host/db`,
      `postgresql+unix://user:${secret}@/run/postgresql/db`,
      `mysql://user:${secret}@host/db`,
      `mysql://user@host/db?password=${secret}`,
      `mysql+unix://user:${secret}@/run/mysqld.sock/db`,
    ]) {
      expect(parseDatabaseUrl(url).redacted).not.toContain(secret);
    }
  });
});
