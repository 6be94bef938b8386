/** What a hostile or broken upstream can make ncps do: fetch other hosts through a narinfo's
 * unsigned URL or a redirect, hang lookups and downloads by trickling, serve a narinfo whose
 * unsigned fields lie, store junk signatures. Every upstream here is a real HTTP server; the
 * "internal service" is one ncps must never ask anything. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import { NarDownload } from "../../src/cache/nar-download.ts";
import { parseNarInfo, serializeNarInfo } from "../../src/nix/narinfo.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { parsePublicKey } from "../../src/nix/signature.ts";
import { createLogger, silentLogger } from "../../src/telemetry/logger.ts";
import { UpstreamPool } from "../../src/upstream/pool.ts";
import { Upstream } from "../../src/upstream/upstream.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { makeSyntheticCache, type SyntheticCache } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream as TestUpstream } from "../helpers/upstream-server.ts";

const work = await mkdtemp(join(tmpdir(), "ncps-upstream-hostile-"));
const running: RunningNcps[] = [];
const servers: { stop(force?: boolean): unknown }[] = [];
let seq = 0;

/** A service on another port that must never be asked anything. */
const internal = { hits: 0, url: "" };
let cache: SyntheticCache;
let upstream: TestUpstream;

beforeAll(async () => {
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: () => {
      internal.hits++;
      return new Response("internal secret");
    },
  });
  servers.push(server);
  internal.url = `http://127.0.0.1:${server.port}`;
  cache = await makeSyntheticCache(join(work, "upstream"));
  upstream = await startUpstream(cache.dir);
  servers.push(upstream);
});

afterAll(async () => {
  for (const n of running) await n.stop();
  for (const s of servers) await s.stop(true);
  await rm(work, { recursive: true, force: true });
});

async function start(upstreams: string[], args: Record<string, unknown> = {}): Promise<RunningNcps> {
  const ncps = await startInProcess(join(work, `ncps-${++seq}`), {
    "cache-upstream-url": upstreams,
    "cache-upstream-public-key": [cache.publicKey],
    ...args,
  });
  running.push(ncps);
  return ncps;
}

/** The whole body, or "error" when the response or its stream breaks (a NAR that failed). */
async function bodyOrError(res: Response | Promise<Response>): Promise<Uint8Array | "error"> {
  try {
    return new Uint8Array(await (await res).arrayBuffer());
  } catch {
    return "error";
  }
}

/** A server whose answers the test writes: `route(path)` returns a Response, or undefined
 * for a file of `dir` (404 when absent). */
function startServer(dir: string, route: (path: string, url: string) => Response | Promise<Response> | undefined) {
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const path = new URL(req.url).pathname;
      const routed = await route(path, `http://127.0.0.1:${server.port}`);
      if (routed) return routed;
      const file = Bun.file(join(dir, path));
      return (await file.exists()) ? new Response(file) : new Response("not found", { status: 404 });
    },
  });
  servers.push(server);
  return `http://127.0.0.1:${server.port}`;
}

/** A body that sends its first byte at once, then one byte per second. */
function trickle(text: string): Response {
  let sent = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      if (sent > 0) await new Promise((r) => (timer = setTimeout(r, 1000)));
      if (sent >= text.length) return c.close();
      c.enqueue(new TextEncoder().encode(text[sent++]));
    },
    cancel: () => clearTimeout(timer),
  });
  return new Response(body, { headers: { "content-type": "text/x-nix-narinfo" } });
}

/** An upstream whose build logs never end (a line every 50 ms); `sending` resolves when it
 * starts one, `cancelled` when the reader (ncps) gives that one up. */
function startEndlessLogs() {
  const sending = Promise.withResolvers<void>();
  const cancelled = Promise.withResolvers<"cancelled">();
  const started = { count: 0 };
  const url = startServer(cache.dir, (path) => {
    if (!path.startsWith("/log/")) return undefined;
    started.count++;
    sending.resolve();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        await new Promise((r) => (timer = setTimeout(r, 50)));
        c.enqueue(new TextEncoder().encode("building...\n"));
      },
      cancel: () => {
        clearTimeout(timer);
        cancelled.resolve("cancelled");
      },
    });
    return new Response(body, { headers: { "content-type": "text/plain" } });
  });
  return { url, sending: sending.promise, cancelled: cancelled.promise, started };
}

/** `p`, or "still running" when it has not settled within `ms` (the bug: it never does). */
function within<T>(p: Promise<T>, ms: number): Promise<T | "still running"> {
  let timer: ReturnType<typeof setTimeout>;
  const late = new Promise<"still running">((r) => (timer = setTimeout(() => r("still running"), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

const drvName = () => `${encodeNix32(crypto.getRandomValues(new Uint8Array(20)))}-hostile.drv`;

describe("NAR URLs and redirects", () => {
  test("a signed narinfo whose URL names another host is absent there, and that host gets no request", async () => {
    const p = await cache.add("url-elsewhere", { edit: (ni) => ({ ...ni, url: `${internal.url}/nar/secret.nar` }) });
    const ncps = await start([upstream.url]);
    const res = await fetch(`${ncps.url}/${p.hash}.narinfo`);
    expect(res.status).toBe(404);
    expect(internal.hits).toBe(0);
  });

  test("a NAR on an origin allowed by --cache-upstream-nar-origin is fetched from there", async () => {
    const cdnDir = join(work, "cdn");
    const cdn = await startUpstream(await mkdtemp(cdnDir));
    servers.push(cdn);
    const p = await cache.add("on-cdn", { edit: (ni) => ({ ...ni, url: `${cdn.url}/nar/on-cdn.nar` }) });
    await Bun.write(join(cdn.dir, "nar", "on-cdn.nar"), p.file);
    const refused = await start([upstream.url]);
    expect((await fetch(`${refused.url}/${p.hash}.narinfo`)).status).toBe(404);
    const ncps = await start([upstream.url], { "cache-upstream-nar-origin": [cdn.url] });
    const res = await fetch(`${ncps.url}/${p.hash}.narinfo`);
    expect(res.status).toBe(200);
    const nar = await fetch(`${ncps.url}/${parseNarInfo(await res.text()).url}`);
    expect(await bodyOrError(nar)).toEqual(p.file);
    expect(cdn.hits("/nar/on-cdn.nar")).toBe(1);
  });

  test("a redirect to another host is not followed, for a narinfo, a NAR or a build log; one within the upstream is", async () => {
    const redirected = await cache.add("redirected");
    const narMoved = await cache.add("nar-moved");
    const narMovedPath = `/${narMoved.narinfo.url}`;
    const sameOrigin = await cache.add("same-origin");
    const front = startServer(cache.dir, (path, self) => {
      if (path === `/${redirected.hash}.narinfo` || path.startsWith("/log/") || path === narMovedPath) {
        return Response.redirect(`${internal.url}${path}`, 302);
      }
      if (path === `/moved/${sameOrigin.hash}.narinfo`) return new Response(Bun.file(join(cache.dir, `${sameOrigin.hash}.narinfo`)));
      if (path === `/${sameOrigin.hash}.narinfo`) return Response.redirect(`${self}/moved/${sameOrigin.hash}.narinfo`, 302);
      return undefined;
    });
    const ncps = await start([front]);
    expect((await fetch(`${ncps.url}/${redirected.hash}.narinfo`)).status).toBe(404);
    // a refused redirect is the upstream's failure to answer, not a log it lacks
    expect((await fetch(`${ncps.url}/log/${drvName()}`)).status).toBe(502);
    const info = await fetch(`${ncps.url}/${narMoved.hash}.narinfo`);
    expect(info.status).toBe(200);
    const nar = fetch(`${ncps.url}/${parseNarInfo(await info.text()).url}`);
    expect(await bodyOrError(nar)).not.toEqual(new TextEncoder().encode("internal secret"));
    expect(internal.hits).toBe(0);
    expect((await fetch(`${ncps.url}/${sameOrigin.hash}.narinfo`)).status).toBe(200);
  });
});

describe("deadlines", () => {
  test("a narinfo trickling at one byte per second ends the lookup at the deadline, for every request that joined it", async () => {
    const p = await cache.add("trickle");
    const slow = startServer(cache.dir, (path) => (path.endsWith(".narinfo") ? trickle(p.text) : undefined));
    const pool = new UpstreamPool([new Upstream(slow, 0, { headerTimeoutMs: 300, logger: silentLogger })], {
      trustedKeys: [parsePublicKey(cache.publicKey)],
      negativeTtlMs: 0,
      logger: silentLogger,
    });
    const first = pool.lookupNarInfo(p.hash);
    const joined = pool.lookupNarInfo(p.hash);
    expect(await within(Promise.all([first, joined]), 3000)).toEqual([null, null]);
  });

  test("a shared lookup ends at its overall deadline even while an upstream request may still run", async () => {
    const hung = startServer(cache.dir, () => new Promise<Response>(() => {}));
    const pool = new UpstreamPool([new Upstream(hung, 0, { headerTimeoutMs: 60_000, logger: silentLogger })], {
      trustedKeys: [parsePublicKey(cache.publicKey)],
      negativeTtlMs: 0,
      lookupTimeoutMs: 200,
      logger: silentLogger,
    });
    expect(await within(pool.lookupNarInfo("00000000000000000000000000000000"), 3000)).toBeNull();
  });

  test("a build log trickling forever ends at the upstream deadline with a 502, its upstream request cancelled", async () => {
    const endless = startEndlessLogs();
    // an upstream request's deadline is the dialer timeout plus the response header timeout
    const ncps = await start([endless.url], { "cache-upstream-dialer-timeout": "250ms", "cache-upstream-response-header-timeout": "250ms" });
    const answered = (async () => {
      const res = await fetch(`${ncps.url}/log/${drvName()}`);
      return { status: res.status, text: await res.text() };
    })();
    expect(await within(answered, 2000)).toEqual({ status: 502, text: "Bad Gateway\n" });
    // the upstream sees its connection closed (the server notices a moment later)
    expect(await within(endless.cancelled, 2000)).toBe("cancelled");
  });

  test("a client that goes away while an upstream build log trickles ends the upstream request, long before the deadline", async () => {
    const endless = startEndlessLogs();
    const lines: string[] = [];
    const logger = createLogger("info", {}, (line) => lines.push(line));
    const args = { "cache-upstream-url": [endless.url], "cache-upstream-public-key": [cache.publicKey], "cache-upstream-response-header-timeout": "20s" };
    const ncps = await startInProcess(join(work, `ncps-${++seq}`), args, logger);
    running.push(ncps);
    const client = new AbortController();
    const asked = fetch(`${ncps.url}/log/${drvName()}`, { signal: client.signal }).catch(() => "aborted");
    await endless.sending;
    client.abort();
    expect(await asked).toBe("aborted");
    expect(await within(endless.cancelled, 3000)).toBe("cancelled");
    // nobody to answer: not an upstream failure, nothing logged as an error
    expect(lines.filter((line) => JSON.parse(line).level === "error")).toEqual([]);
  });

  test("build logs held whole in memory are fetched two at a time: a third request meanwhile gets 503 at once", async () => {
    const endless = startEndlessLogs();
    const ncps = await start([endless.url], { "cache-upstream-response-header-timeout": "20s" });
    const clients = [new AbortController(), new AbortController()];
    const held = clients.map((c) => fetch(`${ncps.url}/log/${drvName()}`, { signal: c.signal }).catch(() => "aborted"));
    const until = Date.now() + 3000;
    while (endless.started.count < 2 && Date.now() < until) await Bun.sleep(20);
    expect(endless.started.count).toBe(2);
    const third = await within(fetch(`${ncps.url}/log/${drvName()}`).then((r) => r.status), 1000);
    expect(third).toBe(503);
    expect(endless.started.count).toBe(2); // the third never reached the upstream
    for (const c of clients) c.abort();
    await Promise.all(held);
  });

  test("a NAR body trickling just fast enough to dodge the stall timeout is abandoned below the minimum rate", async () => {
    const size = 64 * 1024;
    const nar = crypto.getRandomValues(new Uint8Array(size));
    const hash = `sha256:${encodeNix32(new Bun.CryptoHasher("sha256").update(nar).digest())}`;
    const slow = startServer(work, () => {
      let sent = 0;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const body = new ReadableStream<Uint8Array>({
        async pull(c) {
          if (sent > 0) await new Promise((r) => (timer = setTimeout(r, 20)));
          c.enqueue(nar.subarray(sent, ++sent));
        },
        cancel: () => clearTimeout(timer),
      });
      return new Response(body);
    });
    const up = new Upstream(slow, 0, { headerTimeoutMs: 1000, logger: silentLogger });
    const download = new NarDownload(
      "nar/trickle.nar",
      join(work, "trickle-download"),
      { url: up.resolve("x.nar"), fetch: (url, signal) => up.get(url, signal), expect: { compression: "none", fileSize: size, fileHash: hash, narSize: size, narHash: hash } },
      async () => {},
      silentLogger,
      { stallTimeoutMs: 1000, minBytesPerSecond: 1000, rateWindowMs: 300 },
    );
    const reader = download.reader().getReader();
    const outcome = (async () => {
      for (;;) if ((await reader.read()).done) return "completed";
    })().catch((err: unknown) => String(err));
    expect(await within(outcome, 3000)).toContain("slower than 1000 bytes/s");
    await download.done;
    expect(download.failed).toBe(true);
  });
});

describe("broken and lying upstreams", () => {
  test("a malformed upstream narinfo is logged, once per upstream and reason however often it is asked", async () => {
    const broken = startServer(cache.dir, (path) => (path.endsWith(".narinfo") ? new Response("this is not a narinfo\n") : undefined));
    const lines: string[] = [];
    const logger = createLogger("warn", {}, (line) => lines.push(line));
    const pool = new UpstreamPool([new Upstream(broken, 0, { headerTimeoutMs: 2000, logger })], {
      trustedKeys: [parsePublicKey(cache.publicKey)],
      negativeTtlMs: 0,
      logger,
    });
    for (const hash of ["00000000000000000000000000000000", "11111111111111111111111111111111", "00000000000000000000000000000000"]) {
      expect(await pool.lookupNarInfo(hash)).toBeNull();
    }
    const logged = lines.map((l) => JSON.parse(l)).filter((r) => String(r.msg).includes("malformed narinfo"));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: "warn", upstream: broken });
  });

  test("a narinfo whose FileSize lies is replaced after its NAR fails: the next request gets the path from another upstream", async () => {
    // zstd: an uncompressed NAR is stored recompressed and its narinfo then names no FileSize
    const p = await cache.add("filesize-lie", { compression: "zstd", size: 64 * 1024, afterSigning: (ni) => ({ ...ni, fileSize: ni.fileSize! + 1 }) });
    const honestDir = await mkdtemp(join(work, "honest-"));
    await writeFile(join(honestDir, `${p.hash}.narinfo`), serializeNarInfo({ ...p.narinfo, fileSize: p.file.length }));
    await Bun.write(join(honestDir, p.narinfo.url), p.file);
    const honest = await startUpstream(honestDir);
    servers.push(honest);
    const ncps = await start([upstream.url, honest.url]);

    const lying = parseNarInfo(await (await fetch(`${ncps.url}/${p.hash}.narinfo`)).text());
    expect(lying.fileSize).toBe(p.file.length + 1);
    expect(await bodyOrError(fetch(`${ncps.url}/${lying.url}`))).not.toEqual(p.file);
    await ncps.cache.drain();

    const res = await fetch(`${ncps.url}/${p.hash}.narinfo`);
    expect(res.status).toBe(200);
    const served = parseNarInfo(await res.text());
    expect(served.fileSize).toBe(p.file.length);
    expect(await bodyOrError(await fetch(`${ncps.url}/${served.url}`))).toEqual(p.file);
    expect(honest.hits(`/${p.narinfo.url}`)).toBe(1);
  });

  test("junk Sig lines an upstream adds are dropped: ncps serves the trusted signature and its own", async () => {
    const junk = Array.from({ length: 50 }, (_, i) => `junk-${i}:${Buffer.from(crypto.getRandomValues(new Uint8Array(64))).toString("base64")}`);
    const p = await cache.add("junk-sigs", { afterSigning: (ni) => ({ ...ni, sigs: [...ni.sigs, ...junk] }) });
    const ncps = await start([upstream.url]);
    const res = await fetch(`${ncps.url}/${p.hash}.narinfo`);
    expect(res.status).toBe(200);
    const names = parseNarInfo(await res.text()).sigs.map((s) => s.slice(0, s.indexOf(":")));
    expect(names.sort()).toEqual([cache.key.name, parsePublicKey(ncps.publicKey).name].sort());
  });
});
