/**
 * Proves the e2e building blocks against the real Nix client, without ncps: closures built
 * by Nix, binary caches written by Nix, served over HTTP by the test upstream and
 * substituted back by Nix; plus every fault of the upstream, observed with fetch.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, readFile, rm, stat, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "../helpers/eventually.ts";
import {
  buildClosure,
  createNixEnv,
  makeKeyPair,
  nixAvailable,
  publishCache,
  storePathHash,
  substitute,
  verifyStore,
  type BuiltClosure,
  type KeyPair,
  type NixEnv,
} from "../helpers/nix.ts";
import { testIf } from "../helpers/prereq.ts";
import {
  startSilentPort,
  startStoppedPort,
  startUpstream,
  type Upstream,
} from "../helpers/upstream-server.ts";

const nixTest = testIf(nixAvailable, "nix and nix-store are not on PATH");
const BIG_BYTES = 100 * 1024 * 1024;
// Explicit, because Bun 1.4.4 does not apply bunfig.toml's [test] timeout (5 s default).
// Generous: these bound a hang, they are not performance assertions.
const SETUP_TIMEOUT_MS = 180_000;
const NIX_TEST_TIMEOUT_MS = 90_000;
const TEST_TIMEOUT_MS = 30_000;

function sha256(data: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(data).digest("hex");
}

/** Sends one raw HTTP/1.1 request and returns every byte until the server closes. Used
 * where fetch would hide the framing (or normalise the path). */
function rawRequest(port: number, requestLine: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(socket) {
          socket.write(`${requestLine}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
        },
        data(_socket, data) {
          parts.push(Buffer.from(data));
        },
        close() {
          resolve(Buffer.concat(parts));
        },
        error() {
          resolve(Buffer.concat(parts));
        },
      },
    }).catch(reject);
  });
}

function splitResponse(raw: Buffer): { head: string; body: Buffer } {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) throw new Error(`no complete response head in ${raw.length} bytes`);
  return { head: raw.subarray(0, end).toString("latin1"), body: raw.subarray(end + 4) };
}

async function narinfoFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.endsWith(".narinfo"));
}

describe("Nix client against caches written by Nix and served by the test upstream", () => {
  let nix: NixEnv;
  let key: KeyPair;
  let otherKey: KeyPair;
  let upstreamStore: string;
  let bigClosure: BuiltClosure;
  let smallClosure: BuiltClosure;
  let zstdDir: string;
  let xzDir: string;
  let noneDir: string;
  const upstreams: Upstream[] = [];

  async function serve(dir: string): Promise<Upstream> {
    const up = await startUpstream(dir);
    upstreams.push(up);
    return up;
  }

  beforeAll(async () => {
    if (!nixAvailable) return;
    nix = await createNixEnv();
    [key, otherKey] = await Promise.all([makeKeyPair(nix, "upstream-1"), makeKeyPair(nix, "other-1")]);
    upstreamStore = nix.store("upstream");
    const seed = `harness-${crypto.randomUUID()}`;
    zstdDir = join(nix.root, "cache-zstd");
    xzDir = join(nix.root, "cache-xz");
    noneDir = join(nix.root, "cache-none");

    let t = performance.now();
    bigClosure = await buildClosure(nix, upstreamStore, { count: 10, bigBytes: BIG_BYTES, seed });
    const buildMs = performance.now() - t;
    t = performance.now();
    await publishCache(nix, upstreamStore, [bigClosure.top], zstdDir, { compression: "zstd", key });
    const publishMs = performance.now() - t;

    t = performance.now();
    smallClosure = await buildClosure(nix, upstreamStore, { count: 4, seed: `${seed}-small` });
    await publishCache(nix, upstreamStore, [smallClosure.top], xzDir, { compression: "xz", key });
    await publishCache(nix, upstreamStore, [smallClosure.top], noneDir, { compression: "none", key });
    const smallMs = performance.now() - t;
    console.log(
      `harness timings: build 10 paths + 100 MiB ${buildMs.toFixed(0)} ms, publish zstd ${publishMs.toFixed(0)} ms; ` +
        `small closure build + publish xz + none ${smallMs.toFixed(0)} ms`,
    );
  }, SETUP_TIMEOUT_MS);

  afterAll(async () => {
    await Promise.all(upstreams.map((u) => u.stop()));
    if (nixAvailable && nix !== undefined) await nix.cleanup();
  });

  nixTest("buildClosure: 10 paths chained with fan-in, the top one referencing the big path", async () => {
    const { paths, top, big } = bigClosure;
    expect(paths).toHaveLength(11);
    expect(paths[paths.length - 1]).toBe(top);
    expect(big).toBeDefined();
    expect(paths).toContain(big as string);
    expect(new Set(paths).size).toBe(11);
    // References are what Nix recorded from scanning the outputs, not what we meant.
    const refs = (await nix.run(["nix-store", "--store", upstreamStore, "-q", "--references", top])).stdout;
    expect(refs).toContain(big as string);
    expect(refs).toContain(paths[paths.length - 2] ?? "missing");
    // Requisites order puts some dependency-free path first: p0 or the big path. Find p0 by name.
    const p0 = paths.find((p) => /-ncps-p0-/.test(p)) ?? "missing";
    const referrers = (await nix.run(["nix-store", "--store", upstreamStore, "-q", "--referrers", p0])).stdout;
    expect(referrers.trim().split("\n").length).toBeGreaterThanOrEqual(2);
    expect(paths.some((p) => p.includes("+x=y"))).toBe(true);
    const blob = await stat(join(upstreamStore, big as string, "blob"));
    expect(blob.size).toBe(BIG_BYTES);
    // Distinct seeds give distinct store paths.
    expect(smallClosure.paths.filter((p) => paths.includes(p))).toEqual([]);
  }, NIX_TEST_TIMEOUT_MS);

  nixTest("publishCache: Nix writes signed narinfos, NARs and nix-cache-info for each compression", async () => {
    for (const [dir, compression, closure] of [
      [zstdDir, "zstd", bigClosure],
      [xzDir, "xz", smallClosure],
      [noneDir, "none", smallClosure],
    ] as const) {
      expect(await readFile(join(dir, "nix-cache-info"), "utf8")).toContain("StoreDir: /nix/store");
      const infos = await narinfoFiles(dir);
      expect(infos.sort()).toEqual(closure.paths.map((p) => `${storePathHash(p)}.narinfo`).sort());
      for (const info of infos) {
        const text = await readFile(join(dir, info), "utf8");
        expect(text).toContain(`Compression: ${compression}\n`);
        expect(text).toContain(`Sig: ${key.name}:`);
      }
    }
    const bigInfo = await readFile(join(zstdDir, `${storePathHash(bigClosure.big as string)}.narinfo`), "utf8");
    const url = /^URL: (.+)$/m.exec(bigInfo)?.[1] ?? "missing";
    expect((await stat(join(zstdDir, url))).size).toBeGreaterThan(BIG_BYTES);
  }, NIX_TEST_TIMEOUT_MS);

  nixTest("substitute (nix copy) from the zstd upstream with the publishing key: all 11 paths, verified", async () => {
    const up = await serve(zstdDir);
    const client = nix.store("client-zstd");
    const t = performance.now();
    const result = await substitute(nix, {
      from: up.url,
      paths: [bigClosure.top],
      trustedKeys: [key.publicKey],
      store: client,
    });
    console.log(`harness timings: substitute 11 paths incl. 100 MiB over HTTP ${(performance.now() - t).toFixed(0)} ms`);
    expect(result.stderr).not.toContain("error:");
    expect(result.code).toBe(0);
    await verifyStore(nix, client, bigClosure.paths, [key.publicKey]);
    const big = bigClosure.big as string;
    const [mine, theirs] = await Promise.all([
      readFile(join(client, big, "blob")),
      readFile(join(upstreamStore, big, "blob")),
    ]);
    expect(sha256(mine)).toBe(sha256(theirs));
    // It really went through the upstream.
    expect(up.hits("/nix-cache-info")).toBeGreaterThanOrEqual(1);
    for (const p of bigClosure.paths) expect(up.hits(`/${storePathHash(p)}.narinfo`)).toBeGreaterThanOrEqual(1);
    expect(up.hits("/nar/")).toBe(11);
  }, NIX_TEST_TIMEOUT_MS);

  nixTest("substitute (nix-store --realise) from the xz upstream, and nix copy from the uncompressed one", async () => {
    const xzUp = await serve(xzDir);
    const viaRealise = nix.store("client-xz");
    const realised = await substitute(nix, {
      from: xzUp.url,
      paths: [smallClosure.top],
      trustedKeys: [key.publicKey],
      store: viaRealise,
      mode: "realise",
    });
    expect(realised.stderr).not.toContain("error:");
    expect(realised.code).toBe(0);
    await verifyStore(nix, viaRealise, smallClosure.paths, [key.publicKey]);
    expect(xzUp.hits("/nar/")).toBe(smallClosure.paths.length);

    const noneUp = await serve(noneDir);
    const viaCopy = nix.store("client-none");
    const copied = await substitute(nix, {
      from: noneUp.url,
      paths: [smallClosure.top],
      trustedKeys: [key.publicKey],
      store: viaCopy,
    });
    expect(copied.code).toBe(0);
    await verifyStore(nix, viaCopy, smallClosure.paths, [key.publicKey]);
    expect(noneUp.hits("/nar/")).toBe(smallClosure.paths.length);
  }, NIX_TEST_TIMEOUT_MS);

  nixTest("a client trusting only another key gets nothing, in both modes; verifyStore says so", async () => {
    const up = await serve(noneDir);
    for (const mode of ["copy", "realise"] as const) {
      const client = nix.store(`client-untrusting-${mode}`);
      const result = await substitute(nix, {
        from: up.url,
        paths: [smallClosure.top],
        trustedKeys: [otherKey.publicKey],
        store: client,
        mode,
      });
      expect(result.code).not.toBe(0);
      expect(result.stderr).toMatch(/signed|signature/i);
      await expect(verifyStore(nix, client, [smallClosure.top])).rejects.toThrow();
    }
    // The paths are there and intact in the trusting client, but not signed by otherKey.
    const trusting = nix.store("client-none");
    await verifyStore(nix, trusting, smallClosure.paths);
    await expect(verifyStore(nix, trusting, smallClosure.paths, [otherKey.publicKey])).rejects.toThrow(/untrusted/);
  }, NIX_TEST_TIMEOUT_MS);

  nixTest("Nix fails on a corrupt NAR, a cut NAR and a 500 narinfo, and succeeds once the faults are gone", async () => {
    const up = await serve(noneDir);
    const attempt = (name: string) =>
      substitute(nix, { from: up.url, paths: [smallClosure.top], trustedKeys: [key.publicKey], store: nix.store(name) });

    up.fault("/nar/", { kind: "corrupt" });
    const corrupt = await attempt("client-fault-corrupt");
    // Which error depends on where the flipped bytes land (a NAR length field, file
    // contents -> hash mismatch); any error is right, a valid path is not.
    expect(corrupt.code).not.toBe(0);
    expect(corrupt.stderr).toContain("error:");
    await expect(verifyStore(nix, nix.store("client-fault-corrupt"), [smallClosure.top])).rejects.toThrow();

    up.fault("/nar/", { kind: "cut", afterBytes: 100 });
    const cut = await attempt("client-fault-cut");
    expect(cut.code).not.toBe(0);
    expect(cut.stderr).toContain("error:");
    await expect(verifyStore(nix, nix.store("client-fault-cut"), [smallClosure.top])).rejects.toThrow();

    up.fault("/nar/", null);
    up.fault(/\.narinfo$/, { kind: "status", status: 500 });
    const failing = await attempt("client-fault-500");
    expect(failing.code).not.toBe(0);
    expect(failing.stderr).toContain("500");

    up.fault(/\.narinfo$/, null);
    const healthy = nix.store("client-fault-healed");
    const ok = await attempt("client-fault-healed");
    expect(ok.code).toBe(0);
    await verifyStore(nix, healthy, smallClosure.paths, [key.publicKey]);
  }, NIX_TEST_TIMEOUT_MS);
});

describe("test upstream: serving and faults, seen by fetch", () => {
  let dir: string;
  let up: Upstream;
  const narPath = "/nar/0abc.nar.zst";
  const narinfoPath = "/0123456789abcdfghijklmnpqrsvwxyz.narinfo";
  const narinfoText = "StorePath: /nix/store/0123456789abcdfghijklmnpqrsvwxyz-x\nURL: nar/0abc.nar.zst\n";
  let nar: Uint8Array;

  beforeAll(async () => {
    const parent = await mkdtemp(join(tmpdir(), "ncps-upstream-"));
    dir = join(parent, "cache");
    await mkdir(join(dir, "nar"), { recursive: true });
    // Outside the served directory: traversal must not reach it.
    await writeFile(join(parent, "secret"), "do not serve me\n");
    nar = crypto.getRandomValues(new Uint8Array(300_000));
    await writeFile(join(dir, narPath), nar);
    await writeFile(join(dir, narinfoPath), narinfoText);
    await writeFile(join(dir, "nix-cache-info"), "StoreDir: /nix/store\n");
    up = await startUpstream(dir);
  });

  afterAll(async () => {
    await up.stop();
    await rm(join(dir, ".."), { recursive: true, force: true });
  });

  test("serves files with exact Content-Length and Nix content types; 404 for missing and for directories", async () => {
    const info = await fetch(`${up.url}${narinfoPath}`);
    expect(info.status).toBe(200);
    expect(info.headers.get("content-type")).toBe("text/x-nix-narinfo");
    expect(info.headers.get("content-length")).toBe(String(Buffer.byteLength(narinfoText)));
    expect(await info.text()).toBe(narinfoText);

    const narRes = await fetch(`${up.url}${narPath}`);
    expect(narRes.headers.get("content-type")).toBe("application/x-nix-nar");
    expect(narRes.headers.get("content-length")).toBe(String(nar.length));
    expect(sha256(new Uint8Array(await narRes.arrayBuffer()))).toBe(sha256(nar));

    const cacheInfo = await fetch(`${up.url}/nix-cache-info`);
    expect(cacheInfo.headers.get("content-type")).toBe("text/x-nix-cache-info");
    await cacheInfo.text();

    const head = await fetch(`${up.url}${narPath}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(nar.length));

    expect((await fetch(`${up.url}/nope.narinfo`)).status).toBe(404);
    expect((await fetch(`${up.url}/nar`)).status).toBe(404);
    expect((await fetch(`${up.url}/nar/`, { method: "PUT", body: "x" })).status).toBe(405);
  }, TEST_TIMEOUT_MS);

  test("answers a Range request with 206 and the slice", async () => {
    const res = await fetch(`${up.url}${narPath}`, { headers: { Range: "bytes=1000-" } });
    expect(res.status).toBe(206);
    expect(res.headers.get("content-range")).toBe(`bytes 1000-${nar.length - 1}/${nar.length}`);
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(sha256(nar.subarray(1000)));
    const beyond = await fetch(`${up.url}${narPath}`, { headers: { Range: `bytes=${nar.length}-` } });
    expect(beyond.status).toBe(416);
  }, TEST_TIMEOUT_MS);

  test("counts GETs by path prefix and records every request", async () => {
    const fresh = await startUpstream(dir);
    try {
      await (await fetch(`${fresh.url}${narinfoPath}`)).text();
      await (await fetch(`${fresh.url}${narinfoPath}`)).text();
      await fetch(`${fresh.url}${narinfoPath}`, { method: "HEAD" });
      await (await fetch(`${fresh.url}${narPath}`)).arrayBuffer();
      expect(fresh.hits(narinfoPath)).toBe(2);
      expect(fresh.hits(narinfoPath.slice(1))).toBe(2);
      expect(fresh.hits("/nar/")).toBe(1);
      expect(fresh.hits("/")).toBe(3);
      expect(fresh.requests).toEqual([
        { method: "GET", path: narinfoPath },
        { method: "GET", path: narinfoPath },
        { method: "HEAD", path: narinfoPath },
        { method: "GET", path: narPath },
      ]);
    } finally {
      await fresh.stop();
    }
  }, TEST_TIMEOUT_MS);

  test("refuses path traversal, raw and percent-encoded", async () => {
    for (const target of ["/../secret", "/..%2fsecret", "/nar/..%2f..%2fsecret", "/%2e%2e/secret", "/nar/%2E%2E%2Fsecret"]) {
      const { head, body } = splitResponse(await rawRequest(up.port, `GET ${target} HTTP/1.1`));
      expect(head).toMatch(/^HTTP\/1\.1 (400|404) /);
      expect(body.toString()).not.toContain("do not serve me");
    }
  }, TEST_TIMEOUT_MS);

  test("status fault: answers with the status for matching paths only, until removed", async () => {
    up.fault(/\.narinfo$/, { kind: "status", status: 500 });
    expect((await fetch(`${up.url}${narinfoPath}`)).status).toBe(500);
    expect((await fetch(`${up.url}${narinfoPath}`, { method: "HEAD" })).status).toBe(500);
    expect((await fetch(`${up.url}/nix-cache-info`)).status).toBe(200);
    up.fault(/\.narinfo$/, null);
    expect((await fetch(`${up.url}${narinfoPath}`)).status).toBe(200);
  }, TEST_TIMEOUT_MS);

  test("hang fault: never answers; stop() releases the hung request", async () => {
    const hanging = await startUpstream(dir);
    hanging.fault("/", { kind: "hang" });
    let threw: unknown;
    try {
      await fetch(`${hanging.url}${narinfoPath}`, { signal: AbortSignal.timeout(300) });
    } catch (err) {
      threw = err;
    }
    expect(String(threw)).toMatch(/timeout|abort/i);

    const pending = fetch(`${hanging.url}${narinfoPath}`).then(
      (res) => `answered ${res.status}`,
      (err: unknown) => `failed ${String(err)}`,
    );
    await eventually("the second request arriving", () => hanging.requests.length === 2, { deadlineMs: 5_000, everyMs: 10 });
    await hanging.stop();
    expect(await pending).toMatch(/^failed/);
  }, TEST_TIMEOUT_MS);

  test("delay fault: answers normally, not before the delay", async () => {
    up.fault(narinfoPath, { kind: "delay", ms: 300 });
    const started = performance.now();
    const res = await fetch(`${up.url}${narinfoPath}`);
    expect(await res.text()).toBe(narinfoText);
    // A lower bound only: the server cannot answer earlier, however slow the machine.
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    up.fault(narinfoPath, null);
  }, TEST_TIMEOUT_MS);

  test("cut fault: full Content-Length, then the connection breaks after exactly N body bytes", async () => {
    up.fault("/nar/", { kind: "cut", afterBytes: 1000 });
    const res = await fetch(`${up.url}${narPath}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-length")).toBe(String(nar.length));
    await expect(res.arrayBuffer()).rejects.toThrow();

    for (const afterBytes of [0, 1000, 200_000]) {
      up.fault("/nar/", { kind: "cut", afterBytes });
      const { head, body } = splitResponse(await rawRequest(up.port, `GET ${narPath} HTTP/1.1`));
      expect(head).toMatch(/^HTTP\/1\.1 200 /);
      expect(head).toMatch(new RegExp(`\\r\\ncontent-length: ${nar.length}\\r\\n`, "i"));
      expect(head).not.toMatch(/transfer-encoding/i);
      expect(body.length).toBe(afterBytes);
      expect(sha256(body)).toBe(sha256(nar.subarray(0, afterBytes)));
    }
    up.fault("/nar/", null);
  }, TEST_TIMEOUT_MS);

  test("corrupt fault: same length, a few bytes in the middle inverted", async () => {
    up.fault("/nar/", { kind: "corrupt" });
    const res = await fetch(`${up.url}${narPath}`);
    expect(res.headers.get("content-length")).toBe(String(nar.length));
    const body = new Uint8Array(await res.arrayBuffer());
    expect(body.length).toBe(nar.length);
    const differing: number[] = [];
    for (let i = 0; i < body.length; i++) if (body[i] !== nar[i]) differing.push(i);
    expect(differing.length).toBeGreaterThan(0);
    expect(differing.length).toBeLessThanOrEqual(16);
    expect(differing[0]).toBeGreaterThanOrEqual(nar.length / 2 - 1);
    up.fault("/nar/", null);
    expect(sha256(new Uint8Array(await (await fetch(`${up.url}${narPath}`)).arrayBuffer()))).toBe(sha256(nar));
  }, TEST_TIMEOUT_MS);

  test("slow fault: the whole body, intact, no faster than the rate", async () => {
    up.fault("/nar/", { kind: "slow", bytesPerSecond: 500_000 });
    const started = performance.now();
    const res = await fetch(`${up.url}${narPath}`);
    expect(res.headers.get("content-length")).toBe(String(nar.length));
    const body = new Uint8Array(await res.arrayBuffer());
    const elapsed = performance.now() - started;
    expect(sha256(body)).toBe(sha256(nar));
    // 300 kB at 500 kB/s: at least 600 ms (lower bound only).
    expect(elapsed).toBeGreaterThanOrEqual(550);
    up.fault("/nar/", null);
  }, TEST_TIMEOUT_MS);

  test("a stopped upstream refuses connections; it can come back on the same port", async () => {
    const again = await startUpstream(dir);
    const port = again.port;
    await again.stop();
    await expect(fetch(`http://127.0.0.1:${port}/nix-cache-info`)).rejects.toThrow();
    const back = await startUpstream(dir, { port });
    try {
      expect((await fetch(`${back.url}/nix-cache-info`)).status).toBe(200);
    } finally {
      await back.stop();
    }
  }, TEST_TIMEOUT_MS);

  test("startStoppedPort: nothing listens; startSilentPort: accepts TCP, never answers", async () => {
    const down = await startStoppedPort();
    await expect(fetch(`${down.url}/nix-cache-info`)).rejects.toThrow();

    const silent = await startSilentPort();
    try {
      let threw: unknown;
      try {
        await fetch(`${silent.url}/nix-cache-info`, { signal: AbortSignal.timeout(300) });
      } catch (err) {
        threw = err;
      }
      expect(String(threw)).toMatch(/timeout|abort/i);
      expect(silent.accepted()).toBeGreaterThanOrEqual(1);
    } finally {
      await silent.stop();
    }
  }, TEST_TIMEOUT_MS);
});
