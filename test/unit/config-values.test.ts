import { describe, expect, test } from "bun:test";
import { ConfigError } from "../../src/config/errors.ts";
import { formatDuration } from "../../src/config/options.ts";
import { parseBoolean, parseDuration, parseInteger, splitList } from "../../src/config/values.ts";

describe("parseDuration (Go syntax, to milliseconds)", () => {
  const good: [string, number][] = [
    ["3s", 3000],
    ["500ms", 500],
    ["1m30s", 90_000],
    ["1h", 3_600_000],
    ["1.5h", 5_400_000],
    [".5s", 500],
    ["2h45m", 9_900_000],
    ["1500us", 1.5],
    ["1000000ns", 1],
    ["0", 0],
    ["+3s", 3000],
  ];
  for (const [text, ms] of good) test(text, () => expect(parseDuration(text)).toBeCloseTo(ms, 9));

  for (const text of ["", "3", "3x", "s", "1m30", "3 s", "1s garbage", "1d"]) {
    test(`refuses ${JSON.stringify(text)}`, () => {
      expect(() => parseDuration(text)).toThrow(ConfigError);
      expect(() => parseDuration(text)).toThrow(`invalid duration ${JSON.stringify(text)}`);
    });
  }

  test("refuses negative durations", () => expect(() => parseDuration("-1s")).toThrow('duration "-1s" is negative'));

  test("formatDuration writes what parseDuration reads", () => {
    for (const ms of [500, 3000, 60_000, 90_000, 3_600_000, 3_661_001]) {
      expect(parseDuration(formatDuration(ms))).toBe(ms);
    }
    expect(formatDuration(90_000)).toBe("1m30s");
  });
});

describe("parseBoolean", () => {
  for (const t of ["true", "TRUE", "1", "t", "yes", "on"]) test(t, () => expect(parseBoolean(t)).toBe(true));
  for (const f of ["false", "False", "0", "f", "no", "off"]) test(f, () => expect(parseBoolean(f)).toBe(false));
  test("refuses anything else", () => expect(() => parseBoolean("maybe")).toThrow('invalid boolean "maybe"'));
});

describe("parseInteger", () => {
  test("whole numbers", () => {
    expect(parseInteger("42")).toBe(42);
    expect(parseInteger(" -7 ")).toBe(-7);
  });
  for (const bad of ["4.2", "1e3", "", "0x10", "ten", "99999999999999999999"]) {
    test(`refuses ${JSON.stringify(bad)}`, () => expect(() => parseInteger(bad)).toThrow(ConfigError));
  }
});

test("splitList splits on commas and whitespace and drops empties", () => {
  expect(splitList("a,b c\n d,,")).toEqual(["a", "b", "c", "d"]);
  expect(splitList(" , ")).toEqual([]);
});
