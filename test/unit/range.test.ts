import { describe, expect, test } from "bun:test";
import { resolveRange } from "../../src/server/range.ts";

describe("resolveRange", () => {
  const size = 1000;
  test("no header sends everything", () => expect(resolveRange(null, size)).toBeNull());
  test("open-ended resume (what Nix sends)", () => expect(resolveRange("bytes=100-", size)).toEqual({ start: 100, end: 999 }));
  test("closed range", () => expect(resolveRange("bytes=0-0", size)).toEqual({ start: 0, end: 0 }));
  test("end past the size is clamped", () => expect(resolveRange("bytes=990-5000", size)).toEqual({ start: 990, end: 999 }));
  test("suffix range", () => expect(resolveRange("bytes=-10", size)).toEqual({ start: 990, end: 999 }));
  test("suffix longer than the object", () => expect(resolveRange("bytes=-5000", size)).toEqual({ start: 0, end: 999 }));
  test("start at or past the end is unsatisfiable", () => {
    expect(resolveRange("bytes=1000-", size)).toBe("unsatisfiable");
    expect(resolveRange("bytes=-0", size)).toBe("unsatisfiable");
  });
  test("garbage and multi-range are ignored", () => {
    expect(resolveRange("bytes=a-b", size)).toBeNull();
    expect(resolveRange("bytes=0-1,5-6", size)).toBeNull();
    expect(resolveRange("items=0-1", size)).toBeNull();
    expect(resolveRange("bytes=5-1", size)).toBeNull();
  });
});
