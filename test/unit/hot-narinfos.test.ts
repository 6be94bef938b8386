import { expect, test } from "bun:test";
import { HotNarInfos } from "../../src/cache/hot-narinfos.ts";

const bytes = (n: number) => new Uint8Array(n);

test("entries expire after the TTL", () => {
  const hot = new HotNarInfos(1000, 100);
  hot.set("a", bytes(10), 0);
  expect(hot.get("a", 99)).not.toBeNull();
  expect(hot.get("a", 100)).toBeNull();
  expect(hot.size).toBe(0);
});

test("the byte bound evicts the oldest entries first", () => {
  const hot = new HotNarInfos(100, 1000);
  hot.set("a", bytes(40), 0);
  hot.set("b", bytes(40), 0);
  hot.set("c", bytes(40), 0); // 120 > 100: "a" goes
  expect(hot.get("a", 1)).toBeNull();
  expect(hot.get("b", 1)).not.toBeNull();
  expect(hot.get("c", 1)).not.toBeNull();
  hot.set("huge", bytes(101), 0); // larger than the whole bound: not kept, nothing evicted
  expect(hot.get("huge", 1)).toBeNull();
  expect(hot.size).toBe(2);
});

test("forget drops an entry and its bytes; replacing an entry does not double count", () => {
  const hot = new HotNarInfos(100, 1000);
  hot.set("a", bytes(60), 0);
  hot.set("a", bytes(60), 0);
  hot.set("b", bytes(40), 0);
  expect(hot.get("a", 1)).not.toBeNull();
  hot.forget("a");
  expect(hot.get("a", 1)).toBeNull();
  hot.set("c", bytes(60), 0);
  expect(hot.get("b", 1)).not.toBeNull();
});
