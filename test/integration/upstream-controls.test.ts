/** Upstream controls (issue 15), against real HTTP upstreams: `?priority=N`, the periodic
 * health check, retries of transient narinfo failures, upstreams accepted unsigned, and a NAR
 * its own upstream will not give. */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { getEventListeners } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import { ConfigError, loadConfig } from "../../src/config/load.ts";
import { parsePublicKey } from "../../src/nix/signature.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { UpstreamPool } from "../../src/upstream/pool.ts";
import { Upstream } from "../../src/upstream/upstream.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { makeSyntheticCache, type SyntheticCache } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream as TestUpstream } from "../helpers/upstream-server.ts";

const work = await mkdtemp(join(tmpdir(), "ncps-upstream-controls-"));
afterAll(() => rm(work, { recursive: true, force: true }));

const running: { stop(): Promise<void> }[] = [];
afterEach(async () => {
  for (const r of running.splice(0).reverse()) await r.stop();
});

let counter = 0;
async function cacheAndServer(keyName?: string): Promise<{ cache: SyntheticCache; server: TestUpstream }> {
  const cache = await makeSyntheticCache(join(work, `upstream-${++counter}`), keyName);
  const server = await startUpstream(cache.dir);
  running.push(server);
  return { cache, server };
}

function pool(urls: string[], keys: string[], headerTimeoutMs = 2000) {
  const upstreams = urls.map((url, i) => new Upstream(url, i, { headerTimeoutMs, logger: silentLogger }));
  const p = new UpstreamPool(upstreams, { trustedKeys: keys.map((k) => parsePublicKey(k)), negativeTtlMs: 0, hedgeDelayMs: 100, logger: silentLogger });
  running.push({ stop: async () => p.close() });
  return { pool: p, upstreams };
}

const narinfoHits = (server: TestUpstream) => server.requests.filter((r) => r.path.endsWith(".narinfo")).length;

describe("?priority=N on an upstream URL", () => {
  test("ranks the upstream over its nix-cache-info Priority and is never sent upstream", async () => {
    const a = await cacheAndServer("a-1");
    const b = await cacheAndServer("b-1");
    // both nix-cache-info files say Priority: 40; the URLs decide
    const { pool: p, upstreams } = pool([`${a.server.url}?priority=60`, `${b.server.url}/?priority=10`], [a.cache.publicKey, b.cache.publicKey]);
    await p.checkHealth();
    expect(upstreams.map((u) => [u.url, u.priority])).toEqual([[a.server.url, 60], [b.server.url, 10]]);
    expect(upstreams[1]!.resolve("x.narinfo")).toBe(`${b.server.url}/x.narinfo`);
    const path = await b.cache.add("in-b");
    expect((await p.lookupNarInfo(path.hash))?.upstream).toBe(upstreams[1]!);
    expect(narinfoHits(a.server)).toBe(0);
  });

  test("a priority that is not a whole number from 0 to 65535 is a config error", async () => {
    for (const bad of ["x", "-1", "70000"]) {
      const err = await loadConfig({ "cache-upstream-url": [`https://u.example?priority=${bad}`], "cache-storage-local": join(work, "cfg") }, { HOME: work }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toContain("priority must be a whole number");
    }
  });
});

describe("the health check", () => {
  test("a dead upstream is skipped without costing a lookup its timeout, and comes back once it answers", async () => {
    const dead = await cacheAndServer("dead-1");
    const live = await cacheAndServer("live-1");
    const headerTimeoutMs = 1500;
    const { pool: p, upstreams } = pool([`${dead.server.url}?priority=1`, `${live.server.url}?priority=2`], [dead.cache.publicKey, live.cache.publicKey], headerTimeoutMs);
    dead.server.fault("/", { kind: "hang" });
    await p.checkHealth();
    expect(upstreams.map((u) => u.available)).toEqual([false, true]);

    const inLive = await live.cache.add("in-live");
    const inDead = await dead.cache.add("in-dead");
    const startedAt = performance.now();
    expect((await p.lookupNarInfo(inLive.hash))?.upstream).toBe(upstreams[1]!);
    expect(await p.lookupNarInfo(inDead.hash)).toBeNull(); // skipped: only the live one was asked
    expect(performance.now() - startedAt).toBeLessThan(headerTimeoutMs);
    expect(narinfoHits(dead.server)).toBe(0);

    dead.server.fault("/", null);
    await p.checkHealth();
    expect(upstreams[0]!.available).toBe(true);
    expect((await p.lookupNarInfo(inDead.hash))?.upstream).toBe(upstreams[0]!);
  });

  test("a 5xx nix-cache-info fails the check; a 404 one passes (the upstream answers)", async () => {
    const u = await cacheAndServer("u-1");
    const { pool: p, upstreams } = pool([u.server.url], [u.cache.publicKey]);
    u.server.fault("/nix-cache-info", { kind: "status", status: 503 });
    await p.checkHealth();
    expect(upstreams[0]!.available).toBe(false);
    u.server.fault("/nix-cache-info", { kind: "status", status: 404 });
    await p.checkHealth();
    expect(upstreams[0]!.available).toBe(true);
  });
});

describe("transient narinfo failures are retried with a short backoff", () => {
  test("a reset connection, then 502, 503 and 504 are each tried again; the upstream stays up", async () => {
    const u = await cacheAndServer("u-1");
    const { pool: p, upstreams } = pool([u.server.url], [u.cache.publicKey]);
    const path = await u.cache.add("flaky");
    u.server.fault(`/${path.hash}.narinfo`, { kind: "reset" }, { times: 1 });
    expect((await p.lookupNarInfo(path.hash))?.narinfo.storePath).toBe(path.storePath);
    expect(u.server.hits(`/${path.hash}.narinfo`)).toBe(2);
    for (const status of [502, 503, 504]) {
      const other = await u.cache.add(`flaky-${status}`);
      u.server.fault(`/${other.hash}.narinfo`, { kind: "status", status }, { times: 2 });
      expect((await p.lookupNarInfo(other.hash))?.narinfo.storePath).toBe(other.storePath);
      expect(u.server.hits(`/${other.hash}.narinfo`)).toBe(3);
    }
    expect(upstreams[0]!.available).toBe(true);
  });

  test("the waits between tries leave no abort listener on the caller's signal", async () => {
    const u = await cacheAndServer("u-listeners");
    const upstream = new Upstream(u.server.url, 0, { headerTimeoutMs: 2000, logger: silentLogger });
    const path = await u.cache.add("flaky-listeners");
    u.server.fault(`/${path.hash}.narinfo`, { kind: "status", status: 503 }, { times: 2 });
    const caller = new AbortController();
    expect((await upstream.fetchNarInfo(path.hash, caller.signal)).kind).toBe("found");
    expect(u.server.hits(`/${path.hash}.narinfo`)).toBe(3);
    expect(getEventListeners(caller.signal, "abort")).toHaveLength(0);
  });

  test("a lasting 503 gives up after three tries, and the next upstream answers", async () => {
    const first = await cacheAndServer("first-1");
    const second = await cacheAndServer("second-1");
    const { pool: p, upstreams } = pool([`${first.server.url}?priority=1`, `${second.server.url}?priority=2`], [first.cache.publicKey, second.cache.publicKey]);
    const path = await second.cache.add("only-in-second");
    first.server.fault(`/${path.hash}.narinfo`, { kind: "status", status: 503 });
    expect((await p.lookupNarInfo(path.hash))?.upstream).toBe(upstreams[1]!);
    await Bun.sleep(0);
    expect(first.server.hits(`/${path.hash}.narinfo`)).toBeLessThanOrEqual(3);
    // a 404 is an answer, never retried
    const absent = "0".repeat(32);
    expect(await p.lookupNarInfo(absent)).toBeNull();
    expect(first.server.hits(`/${absent}.narinfo`)).toBe(1);
  });
});

async function ncps(args: Record<string, unknown>): Promise<RunningNcps> {
  const n = await startInProcess(join(work, `ncps-${++counter}`), args);
  running.push(n);
  return n;
}

describe("--cache-upstream-accept-unsigned", () => {
  test("without it an unsigned upstream's narinfo is absent; with it the narinfo is served, signed by ncps, and its NAR still verified", async () => {
    const u = await cacheAndServer("unknown-1");
    const path = await u.cache.add("unsigned", { afterSigning: (n) => ({ ...n, sigs: [] }) });
    const other = "nobody-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
    const strict = await ncps({ "cache-upstream-url": [u.server.url], "cache-upstream-public-key": [other] });
    expect((await fetch(`${strict.url}/${path.hash}.narinfo`)).status).toBe(404);

    const open = await ncps({ "cache-upstream-url": [`${u.server.url}?priority=5`], "cache-upstream-public-key": [other], "cache-upstream-accept-unsigned": [u.server.url] });
    const res = await fetch(`${open.url}/${path.hash}.narinfo`);
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain(`Sig: ncps-test:`);
    const narUrl = /^URL: (.*)$/m.exec(text)![1]!;
    const nar = await fetch(`${open.url}/${narUrl}`);
    expect(Buffer.from(await nar.arrayBuffer()).equals(Buffer.from(path.file))).toBe(true);

    // NarHash is still checked: a corrupted NAR from it never reaches a client whole
    const bad = await u.cache.add("unsigned-corrupt", { afterSigning: (n) => ({ ...n, sigs: [] }) });
    u.server.fault("/nar/", { kind: "corrupt" });
    const badText = await (await fetch(`${open.url}/${bad.hash}.narinfo`)).text();
    const badNar = await fetch(`${open.url}/${/^URL: (.*)$/m.exec(badText)![1]}`);
    const body = badNar.status === 200 ? await badNar.arrayBuffer().then((b) => Buffer.from(b), () => null) : null;
    expect(body === null || !body.equals(Buffer.from(bad.file))).toBe(true);
  });

  test("an upstream with a user and password in its URL is named without them", async () => {
    const config = await loadConfig(
      { "cache-upstream-url": ["https://user:s3cret@a.example/sub?priority=5"], "cache-upstream-accept-unsigned": ["https://a.example/sub/"], "cache-storage-local": join(work, "cfg") },
      { HOME: work },
    );
    expect(config.cacheUpstreamAcceptUnsigned).toEqual(["https://a.example/sub/"]);
  });

  test("naming a URL that is not a configured upstream is a config error", async () => {
    const err = await loadConfig(
      { "cache-upstream-url": ["https://a.example"], "cache-upstream-accept-unsigned": ["https://b.example"], "cache-storage-local": join(work, "cfg") },
      { HOME: work },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe("--cache-upstream-accept-unsigned https://b.example is not one of the --cache-upstream-url upstreams");
  });
});

describe("an upstream that will not give the NAR its own narinfo named", () => {
  test("the client gets a 404, not a 200 and a reset, and the narinfo is forgotten so the next lookup asks again", async () => {
    const u = await cacheAndServer("u-1");
    const path = await u.cache.add("nar-gone", { size: 64 * 1024 });
    const n = await ncps({ "cache-upstream-url": [u.server.url], "cache-upstream-public-key": [u.cache.publicKey] });
    for (const status of [404, 500]) {
      const narinfo = await fetch(`${n.url}/${path.hash}.narinfo`);
      expect(narinfo.status).toBe(200);
      const narUrl = /^URL: (.*)$/m.exec(await narinfo.text())![1]!;
      u.server.fault("/nar/", { kind: "status", status });
      const before = u.server.hits(`/${path.hash}.narinfo`);
      const nar = await fetch(`${n.url}/${narUrl}`);
      expect([status, nar.status]).toEqual([status, 404]);
      await nar.arrayBuffer();
      // forgotten: the next narinfo request goes upstream again
      expect((await fetch(`${n.url}/${path.hash}.narinfo`)).status).toBe(200);
      expect(u.server.hits(`/${path.hash}.narinfo`)).toBe(before + 1);
      u.server.fault("/nar/", null);
    }
    const text = await (await fetch(`${n.url}/${path.hash}.narinfo`)).text();
    const nar = await fetch(`${n.url}/${/^URL: (.*)$/m.exec(text)![1]}`);
    expect(nar.status).toBe(200);
    expect(Buffer.from(await nar.arrayBuffer()).equals(Buffer.from(path.file))).toBe(true);
  });
});
