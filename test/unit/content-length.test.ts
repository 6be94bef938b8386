/** declaredLength: a plain count of bytes, or no length at all. */
import { expect, test } from "bun:test";
import { declaredLength } from "../../src/content-length.ts";

const of = (value: string | null) => declaredLength(new Headers(value === null ? {} : { "content-length": value }));

test("a plain count of bytes is the length", () => {
  expect(of("0")).toBe(0);
  expect(of("1234")).toBe(1234);
  expect(of("999999999999999")).toBe(999_999_999_999_999);
});

test("none, or anything but a plain count, is no length: never NaN, a fraction or a negative", () => {
  for (const forged of [null, "", "-1", "1e9", "0x10", "1.5", "12abc", "Infinity", "1234567890123456"]) expect(of(forged)).toBeNull();
});
