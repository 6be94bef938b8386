/** An upstream reached through a proxy (--cache-upstream-proxy, issue 15), through real
 * proxies: tinyproxy (HTTP) and danted (SOCKS5). Each proxy's own log shows the requests went
 * through it; the origin allow-list and the deadlines hold through the proxy; a dead or
 * silent proxy gives an error that names it. */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../../src/config/load.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { Upstream } from "../../src/upstream/upstream.ts";
import { parseProxyUrl, upstreamProxies } from "../../src/upstream/proxy.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { testIf } from "../helpers/prereq.ts";
import { haveDante, haveTinyproxy, startDante, startTinyproxy, type RunningProxy } from "../helpers/proxies.ts";
import { makeSyntheticCache } from "../helpers/synthetic-cache.ts";
import { startSilentPort, startStoppedPort, startUpstream } from "../helpers/upstream-server.ts";

const work = await mkdtemp(join(tmpdir(), "ncps-upstream-proxy-"));
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  await rm(work, { recursive: true, force: true });
});

const kinds: { name: string; available: boolean; start: (dir: string) => Promise<RunningProxy>; scheme: string }[] = [
  { name: "an HTTP proxy (tinyproxy)", available: haveTinyproxy, start: startTinyproxy, scheme: "http" },
  { name: "a SOCKS5 proxy (danted)", available: haveDante, start: startDante, scheme: "socks5" },
];

let counter = 0;
async function upstreamWithPath(compression: "xz" | "zstd" = "zstd") {
  const cache = await makeSyntheticCache(join(work, `cache-${++counter}`), `proxied-${counter}`);
  const server = await startUpstream(cache.dir);
  cleanups.push(() => server.stop());
  const path = await cache.add(`through-proxy-${counter}`, { compression, size: 256 * 1024 });
  return { cache, server, path };
}

/** Whether the proxy's log names 127.0.0.1:`port` (tinyproxy: in a URL, danted: as host.port). */
function mentions(log: string, port: number): boolean {
  return log.includes(`127.0.0.1:${port}/`) || log.includes(`127.0.0.1.${port}`);
}

for (const kind of kinds) {
  describe(`through ${kind.name}`, () => {
    testIf(kind.available, `${kind.scheme} proxy binary not installed`)("narinfo and NAR are fetched through the proxy: its log shows every request the upstream saw", async () => {
      const proxy = await kind.start(work);
      cleanups.push(() => proxy.stop());
      const { cache, server, path } = await upstreamWithPath();
      const ncps = await startInProcess(join(work, `ncps-${kind.scheme}`), {
        "cache-upstream-url": [server.url],
        "cache-upstream-public-key": [cache.publicKey],
        "cache-upstream-proxy": [`${server.url}=${proxy.url}`],
      });
      cleanups.push(() => ncps.stop());
      const narinfo = await fetch(`${ncps.url}/${path.hash}.narinfo`);
      expect(narinfo.status).toBe(200);
      const nar = await fetch(`${ncps.url}/${path.narinfo.url}`);
      expect(nar.status).toBe(200);
      expect(Buffer.from(await nar.arrayBuffer()).equals(Buffer.from(path.file))).toBe(true);

      const requests = server.requests.length;
      const log = await proxy.log();
      if (kind.scheme === "http") {
        // tinyproxy logs each request line: every request the upstream saw is there
        expect(log).toContain(`GET ${server.url}/${path.hash}.narinfo`);
        expect(log).toContain(`GET ${server.url}/${path.narinfo.url}`);
        expect(log.split("\n").filter((line) => line.includes(`GET ${server.url}/`))).toHaveLength(requests);
      } else {
        // danted logs each connection it opens to the upstream's port; one request each
        expect(log.split("\n").filter((line) => line.includes("tcp/connect [") && line.endsWith(`127.0.0.1.${server.port}`))).toHaveLength(requests);
      }
      expect(server.hits(`/${path.hash}.narinfo`)).toBe(1);
    });

    testIf(kind.available, `${kind.scheme} proxy binary not installed`)("a build log asked with HEAD goes through the proxy as a HEAD: its length, no body", async () => {
      const proxy = await kind.start(work);
      cleanups.push(() => proxy.stop());
      const { cache, server } = await upstreamWithPath();
      const drv = "log/0123456789abcdfghijklmnpqrsvwxyz-proxied.drv";
      await Bun.write(join(cache.dir, drv), "a build log\n".repeat(100));
      const upstream = new Upstream(server.url, 0, { headerTimeoutMs: 2000, logger: silentLogger, proxy: parseProxyUrl(proxy.url) });
      expect(await upstream.headLog(drv)).toEqual({ kind: "found", value: 1200 });
      expect(await upstream.headLog("log/0123456789abcdfghijklmnpqrsvwxyz-absent.drv")).toEqual({ kind: "missing" });
      expect(server.requests.filter((r) => r.path.startsWith("/log/")).map((r) => r.method)).toEqual(["HEAD", "HEAD"]);
    });

    testIf(kind.available, `${kind.scheme} proxy binary not installed`)("a NAR URL on an origin that is not allowed is still refused, and never reaches the proxy", async () => {
      const proxy = await kind.start(work);
      cleanups.push(() => proxy.stop());
      const elsewhere = await upstreamWithPath();
      const cache = await makeSyntheticCache(join(work, `cache-${++counter}`), `pointing-${counter}`);
      const server = await startUpstream(cache.dir);
      cleanups.push(() => server.stop());
      // signed by the upstream, but its NAR URL names another host (the narinfo's URL is unsigned)
      const path = await cache.add("points-elsewhere", { afterSigning: (n) => ({ ...n, url: `${elsewhere.server.url}/${elsewhere.path.narinfo.url}` }) });
      const upstream = new Upstream(server.url, 0, { headerTimeoutMs: 2000, logger: silentLogger, proxy: parseProxyUrl(proxy.url) });
      await expect(upstream.get(path.narinfo.url)).rejects.toThrow("not on the upstream's origin");
      expect(elsewhere.server.requests).toHaveLength(0);
      expect(mentions(await proxy.log(), elsewhere.server.port)).toBe(false);
    });
  });
}

describe("transient failures through a proxy", () => {
  testIf(haveDante, "danted installed")("a connection the upstream resets behind a SOCKS5 proxy is retried like a direct one", async () => {
    const proxy = await startDante(work);
    cleanups.push(() => proxy.stop());
    const { server, path } = await upstreamWithPath();
    server.fault(`/${path.hash}.narinfo`, { kind: "reset" }, { times: 1 });
    const upstream = new Upstream(server.url, 0, { headerTimeoutMs: 2000, logger: silentLogger, proxy: parseProxyUrl(proxy.url) });
    expect((await upstream.fetchNarInfo(path.hash)).kind).toBe("found");
    expect(server.hits(`/${path.hash}.narinfo`)).toBe(2);
  });
});

describe("the environment's proxy", () => {
  testIf(haveTinyproxy && haveDante, "tinyproxy and danted installed")("HTTP_PROXY reaches upstreams without a proxy of their own (the Go ncps reads it too); an upstream's own proxy wins over it", async () => {
    const envProxy = await startTinyproxy(work);
    const ownProxy = await startDante(work);
    cleanups.push(() => envProxy.stop(), () => ownProxy.stop());
    const plain = await upstreamWithPath();
    const proxied = await upstreamWithPath();
    const saved = process.env.HTTP_PROXY;
    process.env.HTTP_PROXY = envProxy.url;
    try {
      const viaEnv = new Upstream(plain.server.url, 0, { headerTimeoutMs: 2000, logger: silentLogger });
      const viaOwn = new Upstream(proxied.server.url, 1, { headerTimeoutMs: 2000, logger: silentLogger, proxy: parseProxyUrl(ownProxy.url) });
      expect((await viaEnv.fetchNarInfo(plain.path.hash)).kind).toBe("found");
      expect((await viaOwn.fetchNarInfo(proxied.path.hash)).kind).toBe("found");
    } finally {
      if (saved === undefined) delete process.env.HTTP_PROXY;
      else process.env.HTTP_PROXY = saved;
    }
    expect(await envProxy.log()).toContain(`GET ${plain.server.url}/${plain.path.hash}.narinfo`);
    expect(mentions(await envProxy.log(), proxied.server.port)).toBe(false);
    expect(mentions(await ownProxy.log(), proxied.server.port)).toBe(true);
  });

  testIf(haveDante, "danted installed")("a SOCKS5 proxy in HTTP_PROXY (which Go reads and Bun's fetch refuses) is used through ncps's own SOCKS path", async () => {
    const proxy = await startDante(work);
    cleanups.push(() => proxy.stop());
    const { cache, server, path } = await upstreamWithPath();
    const saved = { HTTP_PROXY: process.env.HTTP_PROXY, NO_PROXY: process.env.NO_PROXY };
    process.env.HTTP_PROXY = proxy.url;
    delete process.env.NO_PROXY;
    let ncps;
    try {
      // read at start; this test's own fetch below must not see it (Bun's fetch refuses SOCKS)
      ncps = await startInProcess(join(work, "ncps-env-socks"), { "cache-upstream-url": [server.url], "cache-upstream-public-key": [cache.publicKey] });
      cleanups.push(() => ncps!.stop());
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    expect((await fetch(`${ncps.url}/${path.hash}.narinfo`)).status).toBe(200);
    expect(mentions(await proxy.log(), server.port)).toBe(true);
  });
});

describe("a proxy that is down or silent", () => {
  test("a dead proxy (nothing listening) fails the lookup with an error naming the proxy, HTTP and SOCKS5 alike", async () => {
    const { server, path } = await upstreamWithPath();
    const dead = await startStoppedPort();
    for (const scheme of ["http", "socks5"]) {
      const upstream = new Upstream(server.url, 0, { headerTimeoutMs: 2000, logger: silentLogger, proxy: parseProxyUrl(`${scheme}://user:secret@127.0.0.1:${dead.port}`) });
      const lookup = await upstream.fetchNarInfo(path.hash);
      expect(lookup.kind).toBe("error");
      const detail = lookup.kind === "error" ? (lookup.detail ?? "") : "";
      expect(detail).toContain(`via proxy ${scheme}://127.0.0.1:${dead.port}`);
      expect(detail).not.toContain("secret");
    }
    expect(server.requests).toHaveLength(0);
  });

  test("a proxy that accepts and never answers is cut off at the upstream's deadline, HTTP and SOCKS5 alike", async () => {
    const { server, path } = await upstreamWithPath();
    const silent = await startSilentPort();
    cleanups.push(() => silent.stop());
    for (const scheme of ["http", "socks5"]) {
      const upstream = new Upstream(server.url, 0, { headerTimeoutMs: 300, logger: silentLogger, proxy: parseProxyUrl(`${scheme}://127.0.0.1:${silent.port}`) });
      const lookup = await upstream.fetchNarInfo(path.hash);
      expect(lookup).toMatchObject({ kind: "error", reason: "request failed" });
      expect(lookup.kind === "error" && lookup.detail).toContain("no answer within 300 ms");
    }
    expect(silent.accepted()).toBeGreaterThanOrEqual(2);
    expect(server.requests).toHaveLength(0);
  });
});

describe("configuration", () => {
  const load = (proxy: string[], upstreams = ["https://cache.example.org?priority=10"]) =>
    loadConfig({ "cache-upstream-url": upstreams, "cache-upstream-proxy": proxy, "cache-storage-local": join(work, "cfg") }, { HOME: work });

  test("UPSTREAM=PROXY is accepted for an upstream with ?priority=, over the environment too", async () => {
    const config = await load(["https://cache.example.org?priority=10=socks5h://u:p@proxy.lan:1080"]);
    expect(config.cacheUpstreamProxies).toHaveLength(1);
    const fromEnv = await loadConfig({ "cache-upstream-url": ["https://a.example", "https://b.example"], "cache-storage-local": join(work, "cfg") }, {
      HOME: work,
      CACHE_UPSTREAM_PROXIES: "https://a.example=http://p.lan:3128,https://b.example=socks5://p.lan:1080",
    });
    expect(fromEnv.cacheUpstreamProxies).toHaveLength(2);
  });

  test("an upstream with a user and password in its URL is named without them, as --cache-upstream-accept-unsigned names it", async () => {
    const upstream = "https://u:secret@cache.example.org";
    const proxied = (proxy: string) => [...upstreamProxies([upstream], [proxy], {})].map(([u, p]) => [u, p.href]);
    expect(proxied("https://cache.example.org=http://p.lan:3128")).toEqual([[upstream, "http://p.lan:3128/"]]);
    expect(proxied("https://other:creds@cache.example.org=http://p.lan:3128")).toEqual([[upstream, "http://p.lan:3128/"]]);
    expect((await load(["https://cache.example.org=http://p.lan:3128"], [upstream])).cacheUpstreamProxies).toHaveLength(1);
    // one upstream, named twice: with and without the password
    await expect(load(["https://cache.example.org=http://p.lan:1", `${upstream}=http://p.lan:2`], [upstream])).rejects.toThrow(
      "--cache-upstream-proxy: https://cache.example.org is given more than one proxy",
    );
  });

  test("the environment's SOCKS proxy: by the upstream's scheme, lower case too, NO_PROXY hosts and domains; an HTTP one is left to fetch", () => {
    const urls = ["http://a.example", "https://b.example:8443?priority=5", "http://c.sub.example.org"];
    const shown = (env: Record<string, string>) => Object.fromEntries([...upstreamProxies(urls, [], env)].map(([u, p]) => [u, p.href]));
    expect(shown({ HTTP_PROXY: "socks5://p:1080" })).toEqual({ "http://a.example": "socks5://p:1080", "http://c.sub.example.org": "socks5://p:1080" });
    expect(shown({ https_proxy: "socks5h://p:1080" })).toEqual({ "https://b.example:8443?priority=5": "socks5h://p:1080" });
    expect(shown({ HTTP_PROXY: "http://p:3128" })).toEqual({});
    expect(shown({ HTTP_PROXY: "socks5://p:1080", NO_PROXY: "a.example, .example.org" })).toEqual({});
    expect(shown({ HTTP_PROXY: "socks5://p:1080", no_proxy: "a.example:81,*.other" })).toEqual({ "http://a.example": "socks5://p:1080", "http://c.sub.example.org": "socks5://p:1080" });
    expect(shown({ HTTPS_PROXY: "socks5://p:1080", NO_PROXY: "*" })).toEqual({});
    // as in Go, a leading "." (or "*.") names the subdomains only, not the domain itself
    const domainAndSub = ["http://example.org", "http://sub.example.org"];
    const bypassing = (noProxy: string) => [...upstreamProxies(domainAndSub, [], { HTTP_PROXY: "socks5://p:1080", NO_PROXY: noProxy }).keys()];
    expect(bypassing(".example.org")).toEqual(["http://example.org"]);
    expect(bypassing("*.example.org")).toEqual(["http://example.org"]);
    expect(bypassing("example.org")).toEqual([]);
    // its own --cache-upstream-proxy wins
    expect(Object.fromEntries([...upstreamProxies(urls, ["http://a.example=http://own:3128"], { HTTP_PROXY: "socks5://p:1080" })].map(([u, p]) => [u, p.href]))["http://a.example"]).toBe("http://own:3128/");
    expect(() => upstreamProxies(urls, [], { HTTP_PROXY: "socks5://u:secret@p:1080/x" })).toThrow("HTTP_PROXY (or http_proxy): proxy socks5://p:1080");
  });

  test("a malformed value, an unknown upstream, a second proxy for one upstream or a bad scheme is one config error line, without the password", async () => {
    const bad: [string[], string][] = [
      [["http://proxy.lan:3128"], "UPSTREAM_URL=PROXY_URL"],
      [["https://other.example=http://proxy.lan:3128"], "not one of the --cache-upstream-url"],
      [["https://cache.example.org=http://p.lan:1", "https://cache.example.org=http://p.lan:2"], "more than one proxy"],
      [["https://cache.example.org=http://u:secret@p.lan:3128/path"], "nothing after it"],
      [["https://cache.example.org=ftp://u:secret@p.lan:21"], "UPSTREAM_URL=PROXY_URL"],
    ];
    for (const [values, says] of bad) {
      const err = await load(values).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toContain(says);
      expect((err as Error).message).not.toContain("secret");
      expect((err as Error).message.split("\n")).toHaveLength(1);
    }
  });
});
