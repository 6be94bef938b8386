/** Validation and the code that uses a value read it with one parser: every address or URL
 * validation accepts is one the locker or the database opener accepts, and the other way
 * round. (Two parsers of one input drifting apart is how `--server-addr` once broke.) */
import { afterAll, describe, expect, test } from "bun:test";
import { ConfigError } from "../../src/config/load.ts";
import { DatabaseOpenError, openMetadataStore } from "../../src/db/open.ts";
import { RedisLocker } from "../../src/lock/redis.ts";
import { testHome } from "./config-helpers.ts";

const { load } = testHome();

/** undefined when validation accepts `args`, else its ConfigError message. */
async function validationError(args: Record<string, unknown>): Promise<string | undefined> {
  try {
    await load(args);
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
}

describe("--cache-redis-addrs: validation and the Redis locker agree", () => {
  const lockers: RedisLocker[] = [];
  afterAll(() => Promise.all(lockers.map((l) => l.close())));

  // [address, "host:port" the locker connects to, or null when both refuse it]
  const table: [string, string | null][] = [
    ["127.0.0.1:6379", "127.0.0.1:6379"],
    ["redis.internal:7000", "redis.internal:7000"],
    ["[::1]:6380", "[::1]:6380"],
    ["[2001:db8::1]:1", "[2001:db8::1]:1"],
    ["localhost:65535", "localhost:65535"],
    ["redis.internal", null], // Go ncps dials the address as given: no port, no connection
    ["::1:6379", null],
    ["[::1]", null],
    [":6379", null],
    ["host:0", null],
    ["host:65536", null],
    ["host:notaport", null],
    ["redis://host:6379", null],
    ["host/0:6379", null],
    ["[not-v6]:6379", null],
  ];

  for (const [addr, connectsTo] of table) {
    test(`${JSON.stringify(addr)} is ${connectsTo === null ? "refused by both" : `accepted by both as ${connectsTo}`}`, async () => {
      const validation = await validationError({ "cache-redis-addrs": [addr] });
      let locker: RedisLocker | Error;
      try {
        locker = new RedisLocker({ addrs: [addr] }); // lazy: connects on first use only
        lockers.push(locker);
      } catch (err) {
        locker = err as Error;
      }
      if (connectsTo === null) {
        expect(validation).toContain("invalid --cache-redis-addrs entry");
        expect(locker).toBeInstanceOf(Error);
        expect(validation).toContain((locker as Error).message);
      } else {
        expect(validation).toBeUndefined();
        expect((locker as RedisLocker).address).toBe(connectsTo);
      }
    });
  }
});

describe("--cache-database-url: validation and openMetadataStore agree", () => {
  // refused before any connection is tried, by validation and by the opener alike
  const refused = [
    "redis://localhost/0",
    "/var/lib/ncps/db.sqlite",
    "sqlite:",
    "sqlite://host/db.sqlite",
    "postgres://u:pw@db:5432",
    "postgres://u:pw@/ncps",
    "postgres://u:pw@db:99999/ncps",
    "postgres://u:pw@db/ncps?sslmode=sometimes",
    "postgres+unix:///ncps",
    "mysql://u:pw@db/a/b",
    "mysql+unix://host/sock/db",
  ];
  for (const url of refused) {
    test(`${JSON.stringify(url)} is refused by both with the same reason`, async () => {
      const validation = await validationError({ "cache-database-url": url });
      const opened = await openMetadataStore(url).catch((err: unknown) => err);
      expect(opened).toBeInstanceOf(DatabaseOpenError);
      const reason = (opened as Error).message.replace(/^invalid database URL: /, "");
      expect(validation).toBe(`invalid --cache-database-url: ${reason}`);
    });
  }

  test("every scheme the opener knows passes validation", async () => {
    for (const url of [
      "sqlite:/var/lib/ncps/db.sqlite",
      "sqlite3:/var/lib/ncps/db.sqlite",
      "sqlite:///var/lib/ncps/db.sqlite",
      "postgres://u:p@db/ncps",
      "postgresql://db:5433/ncps?sslmode=require",
      "postgres:///ncps?host=/run/postgresql",
      "postgres+unix:///run/postgresql/ncps",
      "postgresql+unix:///run/postgresql/ncps",
      "mysql://u@db/ncps",
      "mysql+unix:///run/mysqld/mysqld.sock/ncps",
    ]) {
      expect(await validationError({ "cache-database-url": url })).toBeUndefined();
    }
  });
});
