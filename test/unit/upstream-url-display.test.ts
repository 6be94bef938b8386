import { expect, test } from "bun:test";
import { withoutCredentials } from "../../src/upstream/upstream-url.ts";

test("an upstream URL shown on the status page carries no user or password", () => {
  expect(withoutCredentials("https://user:s3cret@cache.example.org/sub")).toBe("https://cache.example.org/sub");
  expect(withoutCredentials("https://token@cache.example.org")).toBe("https://cache.example.org");
  expect(withoutCredentials("https://cache.example.org")).toBe("https://cache.example.org");
});
