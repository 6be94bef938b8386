import { expect, test } from "bun:test";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { Upstream } from "../../src/upstream/upstream.ts";
import { sameUpstream, upstreamIdentity, withoutCredentials } from "../../src/upstream/upstream-url.ts";

test("an upstream URL shown on the status page carries no user or password", () => {
  expect(withoutCredentials("https://user:s3cret@cache.example.org/sub")).toBe("https://cache.example.org/sub");
  expect(withoutCredentials("https://token@cache.example.org")).toBe("https://cache.example.org");
  expect(withoutCredentials("https://cache.example.org")).toBe("https://cache.example.org");
});

test("an upstream is known by its URL without priority, user, password or trailing slash, as configured and as Upstream names it", () => {
  for (const configured of ["https://user:s3cret@cache.example.org/sub/?priority=10", "https://cache.example.org/sub", "https://token@cache.example.org/sub/"]) {
    expect(upstreamIdentity(configured)).toBe("https://cache.example.org/sub");
    expect(new Upstream(configured, 0, { headerTimeoutMs: 1000, logger: silentLogger }).url).toBe("https://cache.example.org/sub");
  }
});

test("a narinfo row names its upstream whether or not it was recorded with the URL's user and password", () => {
  const upstream = new Upstream("https://user:s3cret@cache.example.org", 0, { headerTimeoutMs: 1000, logger: silentLogger });
  expect(upstream.is("https://cache.example.org")).toBe(true);
  expect(upstream.is("https://user:s3cret@cache.example.org")).toBe(true);
  expect(sameUpstream("https://old:pw@cache.example.org", upstreamIdentity("https://cache.example.org/"))).toBe(true);
  expect(upstream.is("https://cache.example.org.evil")).toBe(false);
  expect(upstream.is("https://cache.example.org/other")).toBe(false);
  expect(upstream.is(null)).toBe(false);
});
