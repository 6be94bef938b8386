/** Uncompressed NARs are stored zstd-compressed (issue 16): the narinfo keeps Compression:
 * none, NarHash and NarSize without FileHash/FileSize; a client accepting zstd gets the stored
 * bytes with Content-Encoding: zstd, any other client the NAR decompressed; Range is on the
 * NAR's own bytes; HEAD says the same as GET. From an upstream and from an upload. An
 * upstream's Content-Encoding is undone before the bytes are verified. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brotliCompressSync } from "node:zlib";
import type { RunningNcps } from "../../src/compose.ts";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { rawRequest } from "../helpers/raw-http.ts";
import { makeSyntheticCache, sha256Nix32, type SyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

let work: string;
let syn: SyntheticCache;
let upstream: Upstream;
let ncps: RunningNcps;
let path: SyntheticPath;
let narUrl: string;

/** Compressible bytes, as NARs are: text lines with a counter. */
function compressible(lines: number): Uint8Array {
  return Buffer.from(Array.from({ length: lines }, (_, i) => `line ${i}: the quick brown fox jumps over the lazy dog\n`).join(""));
}

/** A GET or HEAD that leaves the body as sent (no decoding by fetch). */
async function get(url: string, headers: Record<string, string>, method = "GET") {
  const res = await fetch(url, { method, headers, decompress: false });
  return { res, body: new Uint8Array(await res.arrayBuffer()) };
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-zstd-"));
  syn = await makeSyntheticCache(join(work, "upstream"));
  path = await syn.add("text", { nar: compressible(20_000) });
  upstream = await startUpstream(syn.dir);
  ncps = await startInProcess(join(work, "data"), {
    "cache-upstream-url": [upstream.url],
    "cache-upstream-public-key": [syn.publicKey],
    "cache-allow-put-verb": true,
  });
  const text = await (await fetch(`${ncps.url}/${path.hash}.narinfo`)).text();
  narUrl = `${ncps.url}/${parseNarInfo(text).url}`;
  // the miss: the NAR as it is, while it downloads
  const miss = await get(narUrl, { "accept-encoding": "zstd" });
  expect(miss.res.headers.get("content-encoding")).toBeNull();
  expect(sha256Nix32(miss.body)).toBe(path.narinfo.narHash);
  await ncps.cache.drain();
});

afterAll(async () => {
  await ncps?.stop();
  await upstream?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("an uncompressed NAR from an upstream", () => {
  test("the narinfo keeps Compression: none, NarHash and NarSize, and drops FileHash and FileSize", async () => {
    const narinfo = parseNarInfo(await (await fetch(`${ncps.url}/${path.hash}.narinfo`)).text());
    expect(narinfo.compression).toBe("none");
    expect(narinfo.narHash).toBe(path.narinfo.narHash);
    expect(narinfo.narSize).toBe(path.nar.length);
    expect(narinfo.fileHash).toBeUndefined();
    expect(narinfo.fileSize).toBeUndefined();
  });

  test("is stored zstd-compressed", async () => {
    const stored = await stat(join(work, "data", parseNarInfo(await (await fetch(`${ncps.url}/${path.hash}.narinfo`)).text()).url));
    expect(stored.size).toBeLessThan(path.nar.length / 10);
  });

  test("a client accepting zstd gets the stored bytes with Content-Encoding: zstd", async () => {
    const { res, body } = await get(narUrl, { "accept-encoding": "gzip, deflate, br, zstd" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-encoding")).toBe("zstd");
    expect(res.headers.get("vary")).toBe("Accept-Encoding, User-Agent");
    expect(Number(res.headers.get("content-length"))).toBe(body.length);
    expect(body.length).toBeLessThan(path.nar.length / 10);
    expect(sha256Nix32(Bun.zstdDecompressSync(body))).toBe(path.narinfo.narHash);
  });

  test.each([["identity"], ["gzip, br"], ["zstd;q=0, *"], [""]])("Accept-Encoding %p gets the NAR decompressed", async (accept) => {
    const { res, body } = await get(narUrl, { "accept-encoding": accept });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-encoding")).toBeNull();
    // the same Vary as the zstd answer: a shared cache must not hand this one to Nix either
    expect(res.headers.get("vary")).toBe("Accept-Encoding, User-Agent");
    expect(sha256Nix32(body)).toBe(path.narinfo.narHash);
  });

  test("without Accept-Encoding: identity, except for Nix, which decodes any Content-Encoding and sends none", async () => {
    const target = `GET /${new URL(narUrl).pathname.slice(1)} HTTP/1.1\r\nHost: ncps`;
    const plain = await rawRequest(ncps.port, target);
    expect(plain.status).toBe(200);
    expect(plain.headers.get("content-encoding")).toBeUndefined();
    expect(plain.headers.get("vary")).toBe("Accept-Encoding, User-Agent");
    const nix = await rawRequest(ncps.port, `${target}\r\nUser-Agent: curl/7.85.0 Nix/2.8.0`);
    expect(nix.headers.get("content-encoding")).toBe("zstd");
    expect(nix.headers.get("vary")).toBe("Accept-Encoding, User-Agent");
  });

  test("Range is on the NAR's own bytes, whatever the client accepts", async () => {
    for (const accept of ["zstd", "identity"]) {
      const { res, body } = await get(narUrl, { "accept-encoding": accept, range: "bytes=100000-100099" });
      expect(res.status).toBe(206);
      expect(res.headers.get("content-encoding")).toBeNull();
      expect(res.headers.get("content-range")).toBe(`bytes 100000-100099/${path.nar.length}`);
      expect(Buffer.from(body).equals(Buffer.from(path.nar.subarray(100000, 100100)))).toBe(true);
    }
    const tail = await get(narUrl, { "accept-encoding": "zstd", range: "bytes=-10" });
    expect(Buffer.from(tail.body).equals(Buffer.from(path.nar.subarray(-10)))).toBe(true);
  });

  test("HEAD says what GET sends", async () => {
    for (const accept of ["zstd", "identity"]) {
      const head = await get(narUrl, { "accept-encoding": accept }, "HEAD");
      const full = await get(narUrl, { "accept-encoding": accept });
      expect(head.res.status).toBe(200);
      expect(head.res.headers.get("content-encoding")).toBe(full.res.headers.get("content-encoding"));
      expect(Number(head.res.headers.get("content-length"))).toBe(full.body.length);
    }
  });
});

test("an uploaded uncompressed NAR is stored compressed and served as one from an upstream", async () => {
  const other = await makeSyntheticCache(join(work, "uploaded"), "uploader-1");
  const up = await other.add("uploaded", { nar: compressible(10_000) });
  const put = (p: string, body: Uint8Array | string) => fetch(`${ncps.url}/upload/${p}`, { method: "PUT", body });
  expect((await put(up.narinfo.url, up.file)).status).toBeLessThan(300);
  expect((await put(`${up.hash}.narinfo`, up.text)).status).toBeLessThan(300);
  const narinfo = parseNarInfo(await (await fetch(`${ncps.url}/${up.hash}.narinfo`)).text());
  expect(narinfo.fileHash).toBeUndefined();
  expect((await stat(join(work, "data", narinfo.url))).size).toBeLessThan(up.nar.length / 10);
  const zstd = await get(`${ncps.url}/${narinfo.url}`, { "accept-encoding": "zstd" });
  expect(zstd.res.headers.get("content-encoding")).toBe("zstd");
  expect(sha256Nix32(Bun.zstdDecompressSync(zstd.body))).toBe(up.narinfo.narHash);
  const plain = await get(`${ncps.url}/${narinfo.url}`, { "accept-encoding": "identity" });
  expect(sha256Nix32(plain.body)).toBe(up.narinfo.narHash);
});

test.each([["zstd"], ["gzip"], ["br"]])("an upstream answering with Content-Encoding: %s is decoded, verified and stored", async (coding) => {
  const encoders: Record<string, (b: Uint8Array<ArrayBuffer>) => Uint8Array> = {
    zstd: (b) => Bun.zstdCompressSync(b),
    gzip: (b) => Bun.gzipSync(b),
    br: (b) => brotliCompressSync(b),
  };
  const other = await makeSyntheticCache(join(work, `encoded-${coding}`), `encoded-${coding}-1`);
  const p = await other.add("encoded", { nar: compressible(5_000) });
  // a static server that encodes every file it sends
  const server = Bun.serve({
    port: 0,
    async fetch(req) {
      const file = Bun.file(join(other.dir, new URL(req.url).pathname));
      if (!(await file.exists())) return new Response("not found", { status: 404 });
      return new Response(encoders[coding]!(new Uint8Array(await file.arrayBuffer())), { headers: { "content-encoding": coding } });
    },
  });
  const proxy = await startInProcess(join(work, `data-${coding}`), { "cache-upstream-url": [server.url.href.replace(/\/$/, "")], "cache-upstream-public-key": [other.publicKey] });
  try {
    const narinfo = parseNarInfo(await (await fetch(`${proxy.url}/${p.hash}.narinfo`)).text());
    expect(narinfo.narHash).toBe(p.narinfo.narHash);
    const nar = await get(`${proxy.url}/${narinfo.url}`, { "accept-encoding": "identity" });
    expect(sha256Nix32(nar.body)).toBe(p.narinfo.narHash);
    await proxy.cache.drain();
    expect(await proxy.cache.nar({ key: narinfo.url, hashPart: narinfo.url.slice(4, 56), compression: "none" }, { startDownload: false, upstream: false })).not.toBeNull();
  } finally {
    await proxy.stop();
    server.stop(true);
  }
});

describe("a NAR larger than one frame", () => {
  const FRAME = 4 * 1024 * 1024;

  test("is stored as several zstd frames that every decoder reads as the NAR, and served whole and by range", async () => {
    const other = await makeSyntheticCache(join(work, "framed"), "framed-1");
    const big = await other.add("framed", { nar: compressible(200_000) }); // ~11 MB: three frames
    expect(big.nar.length).toBeGreaterThan(2 * FRAME);
    const server = await startUpstream(other.dir);
    const proxy = await startInProcess(join(work, "data-framed"), { "cache-upstream-url": [server.url], "cache-upstream-public-key": [other.publicKey] });
    try {
      const narinfo = parseNarInfo(await (await fetch(`${proxy.url}/${big.hash}.narinfo`)).text());
      const url = `${proxy.url}/${narinfo.url}`;
      await (await fetch(url)).arrayBuffer();
      await proxy.cache.drain();

      const storedPath = join(work, "data-framed", narinfo.url);
      const stored = new Uint8Array(await Bun.file(storedPath).arrayBuffer());
      let frames = 0;
      for (let i = 0; i + 3 < stored.length; i++) if (stored[i] === 0x28 && stored[i + 1] === 0xb5 && stored[i + 2] === 0x2f && stored[i + 3] === 0xfd) frames++;
      expect(frames).toBe(Math.ceil(big.nar.length / FRAME));
      // the zstd tool, as a client decoding the Content-Encoding would
      const cli = Bun.spawnSync(["zstd", "-d", "-c", storedPath]);
      expect(cli.exitCode).toBe(0);
      expect(sha256Nix32(cli.stdout)).toBe(big.narinfo.narHash);

      const zstd = await get(url, { "accept-encoding": "zstd" });
      expect(zstd.res.headers.get("content-encoding")).toBe("zstd");
      expect(Buffer.from(zstd.body).equals(Buffer.from(stored))).toBe(true);
      const plain = await get(url, { "accept-encoding": "identity" });
      expect(sha256Nix32(plain.body)).toBe(big.narinfo.narHash);
      // a range across the first frame boundary
      const { res, body } = await get(url, { "accept-encoding": "zstd", range: `bytes=${FRAME - 50}-${FRAME + 49}` });
      expect(res.status).toBe(206);
      expect(Buffer.from(body).equals(Buffer.from(big.nar.subarray(FRAME - 50, FRAME + 50)))).toBe(true);
    } finally {
      await proxy.stop();
      await server.stop();
    }
  });

  test("bytes that do not compress are stored as they are", async () => {
    const other = await makeSyntheticCache(join(work, "random"), "random-1");
    const noise = crypto.getRandomValues(new Uint8Array(FRAME + 1000));
    const p = await other.add("noise", { nar: noise });
    const server = await startUpstream(other.dir);
    const proxy = await startInProcess(join(work, "data-random"), { "cache-upstream-url": [server.url], "cache-upstream-public-key": [other.publicKey] });
    try {
      const narinfo = parseNarInfo(await (await fetch(`${proxy.url}/${p.hash}.narinfo`)).text());
      await (await fetch(`${proxy.url}/${narinfo.url}`)).arrayBuffer();
      await proxy.cache.drain();
      const stored = new Uint8Array(await Bun.file(join(work, "data-random", narinfo.url)).arrayBuffer());
      expect(Buffer.from(stored).equals(Buffer.from(noise))).toBe(true);
      const plain = await get(`${proxy.url}/${narinfo.url}`, { "accept-encoding": "zstd" });
      expect(plain.res.headers.get("content-encoding")).toBeNull();
      expect(sha256Nix32(plain.body)).toBe(p.narinfo.narHash);
    } finally {
      await proxy.stop();
      await server.stop();
    }
  });
});
