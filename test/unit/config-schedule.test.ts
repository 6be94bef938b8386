/** The size cap and LRU options: the schedule parser (the one the scheduler runs) and what
 * config loading makes of the four options. */
import { describe, expect, test } from "bun:test";
import { ConfigError } from "../../src/config/load.ts";
import { nextRun, parseSchedule, ScheduleError } from "../../src/config/schedule.ts";
import { testHome } from "./config-helpers.ts";

const { load, loadError, writeTemp } = testHome();

describe("parseSchedule", () => {
  test("five cron fields, in a time zone", () => {
    const s = parseSchedule("0 2 * * *", "Europe/Berlin");
    expect(s).toEqual({ kind: "cron", pattern: "0 2 * * *", timezone: "Europe/Berlin", text: "0 2 * * *" });
    // 02:00 in Berlin (UTC+1 in winter) is 01:00 UTC
    expect(nextRun(s, new Date("2026-01-10T12:00:00Z"))!.toISOString()).toBe("2026-01-11T01:00:00.000Z");
  });

  test("@daily-style names, @midnight as robfig/cron spells it", () => {
    for (const name of ["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually"]) {
      expect(parseSchedule(name).kind).toBe("cron");
    }
    expect(parseSchedule("@midnight")).toMatchObject({ kind: "cron", pattern: "@daily" });
  });

  test("@every with a Go duration", () => {
    expect(parseSchedule("@every 1h30m")).toEqual({ kind: "every", interval: 5_400_000, text: "@every 1h30m" });
    expect(parseSchedule(" @every 10s ")).toMatchObject({ interval: 10_000 });
    const from = new Date("2026-01-10T12:00:00Z");
    expect(nextRun(parseSchedule("@every 1h"), from)!.toISOString()).toBe("2026-01-10T13:00:00.000Z");
  });

  const refused: [string, string | undefined, RegExp][] = [
    ["0 2 * *", undefined, /expected five cron fields/],
    ["0 0 2 * * *", undefined, /expected five cron fields/], // seconds: not the Go syntax
    ["61 * * * *", undefined, /minute/],
    ["@every", undefined, /expected five cron fields/],
    ["@every soon", undefined, /invalid duration/],
    ["@every 10ms", undefined, /at least 1s/],
    ["@fortnightly", undefined, /expected five cron fields/],
    ["0 2 * * *", "Mars/Olympus", /unknown time zone "Mars\/Olympus"/],
  ];
  for (const [spec, tz, message] of refused) {
    test(`refused: "${spec}"${tz ? ` in ${tz}` : ""}`, () => {
      expect(() => parseSchedule(spec, tz)).toThrow(ScheduleError);
      expect(() => parseSchedule(spec, tz)).toThrow(message);
    });
  }
});

describe("size cap and LRU options", () => {
  test("defaults: no cap, no schedule, a 30m eviction lock", async () => {
    const { config } = await load();
    expect(config.cacheMaxSize).toBeUndefined();
    expect(config.cacheLruSchedule).toBeUndefined();
    expect(config.cacheLruScheduleTimezone).toBeUndefined();
    expect(config.cacheLockLruTtl).toBe(30 * 60_000);
  });

  test("flags, environment and config keys under the Go ncps's names", async () => {
    const byFlag = await load({ "cache-max-size": "10G", "cache-lru-schedule": "@every 1h", "cache-lru-schedule-timezone": "UTC", "cache-lock-lru-ttl": "5m" });
    expect(byFlag.config).toMatchObject({ cacheMaxSize: 10 * 2 ** 30, cacheLruSchedule: "@every 1h", cacheLruScheduleTimezone: "UTC", cacheLockLruTtl: 300_000 });
    const byEnv = await load({}, { CACHE_MAX_SIZE: "5K", CACHE_LRU_SCHEDULE: "0 2 * * *", CACHE_LRU_SCHEDULE_TZ: "Europe/Paris", CACHE_LOCK_LRU_TTL: "1h" });
    expect(byEnv.config).toMatchObject({ cacheMaxSize: 5120, cacheLruSchedule: "0 2 * * *", cacheLruScheduleTimezone: "Europe/Paris", cacheLockLruTtl: 3_600_000 });
    const path = writeTemp(
      "yaml",
      "cache:\n  max-size: 1T\n  lru:\n    schedule: '@daily'\n    timezone: Asia/Tokyo\n  lock:\n    lru-lock-ttl: 10m\n",
    );
    const byFile = await load({ config: path });
    expect(byFile.warnings).toEqual([]);
    expect(byFile.config).toMatchObject({ cacheMaxSize: 2 ** 40, cacheLruSchedule: "@daily", cacheLruScheduleTimezone: "Asia/Tokyo", cacheLockLruTtl: 600_000 });
  });

  test("0 is no cap", async () => {
    expect((await load({ "cache-max-size": "0" })).config.cacheMaxSize).toBe(0);
  });

  const bad: [string, Record<string, unknown>, Record<string, string>, string][] = [
    ["a schedule with four fields", { "cache-lru-schedule": "0 2 * *" }, {}, 'invalid --cache-lru-schedule: "0 2 * *": expected five cron fields'],
    ["an unknown time zone", {}, { CACHE_LRU_SCHEDULE: "@daily", CACHE_LRU_SCHEDULE_TZ: "Europe/Nowhere" }, 'invalid --cache-lru-schedule-timezone: unknown time zone "Europe/Nowhere"'],
    ["a time zone without a schedule is checked too", { "cache-lru-schedule-timezone": "Nowhere" }, {}, "invalid --cache-lru-schedule-timezone"],
    ["a size that is no size", {}, { CACHE_MAX_SIZE: "lots" }, 'CACHE_MAX_SIZE: invalid size "lots"'],
    ["a zero lock TTL", { "cache-lock-lru-ttl": "0" }, {}, "--cache-lock-lru-ttl must be greater than 0"],
  ];
  for (const [name, args, env, expected] of bad) {
    test(`refused, in one ConfigError line: ${name}`, async () => {
      const err = await loadError(args, env);
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.message).toContain(expected);
      expect(err.message).not.toContain("\n");
    });
  }
});
