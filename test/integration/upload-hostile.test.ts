/** What a hostile client or upstream can do with uploads and NAR formats ncps cannot decode:
 * unverifiable compressions, conflicting uploads racing for one store path, narinfos that
 * ask for unbounded upstream work. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import { parseNcpsNarRequest } from "../../src/nix/nar-url.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { makeSyntheticCache, type SyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const work = await mkdtemp(join(tmpdir(), "ncps-upload-hostile-"));
let upstreamCache: SyntheticCache;
let client: SyntheticCache;
let upstream: Upstream;
const running: RunningNcps[] = [];

async function start(name: string, args: Record<string, unknown> = {}): Promise<RunningNcps> {
  const ncps = await startInProcess(join(work, name), {
    "cache-upstream-url": [upstream.url],
    "cache-upstream-public-key": [upstreamCache.publicKey],
    "cache-allow-put-verb": true,
    ...args,
  });
  running.push(ncps);
  return ncps;
}

const put = (ncps: RunningNcps, path: string, body: Uint8Array | string) => fetch(`${ncps.url}/${path}`, { method: "PUT", body });

/** What the path's NAR left in an instance's data directory: its record and its bytes. */
async function traces(name: string, p: SyntheticPath) {
  const key = parseNcpsNarRequest(p.narinfo.url).key;
  const db = new Database(join(work, name, "db", "db.sqlite"), { readonly: true });
  const narRecord = db.query("SELECT key FROM nars WHERE key = ?").get(key);
  db.close();
  return { narRecord, narBytes: await Bun.file(join(work, name, key)).exists() };
}

const randomHash = () => encodeNix32(crypto.getRandomValues(new Uint8Array(20)));

beforeAll(async () => {
  upstreamCache = await makeSyntheticCache(join(work, "upstream"));
  client = await makeSyntheticCache(join(work, "client"), "client-1");
  upstream = await startUpstream(upstreamCache.dir);
});

afterAll(async () => {
  for (const n of running) await n.stop();
  await upstream.stop();
  await rm(work, { recursive: true, force: true });
});

describe("NARs ncps cannot decompress (bzip2, lzip, lz4)", () => {
  test("an upstream bzip2 narinfo whose bytes only match FileHash is absent by default, served with --cache-accept-unverified-compression", async () => {
    // any bytes with a matching FileHash: NarHash cannot be checked without a decoder
    const p = await upstreamCache.add("bzip2-junk", { compression: "bzip2", fileBytes: crypto.getRandomValues(new Uint8Array(512)) });
    const strict = await start("bzip2-strict");
    expect((await fetch(`${strict.url}/${p.hash}.narinfo`)).status).toBe(404);
    expect((await fetch(`${strict.url}/${p.narinfo.url}`)).status).toBe(404);

    const lenient = await start("bzip2-lenient", { "cache-accept-unverified-compression": true });
    expect((await fetch(`${lenient.url}/${p.hash}.narinfo`)).status).toBe(200);
    const nar = await fetch(`${lenient.url}/${p.narinfo.url}`);
    expect(nar.status).toBe(200);
    expect(Buffer.from(await nar.arrayBuffer()).equals(Buffer.from(p.file))).toBe(true);
  });

  test("an uploaded bzip2, lzip or lz4 NAR is refused with a 400 and leaves nothing stored", async () => {
    const ncps = await start("upload-unverifiable");
    for (const compression of ["bzip2", "lzip", "lz4"] as const) {
      const p = await client.add(`upload-${compression}`, { compression, fileBytes: crypto.getRandomValues(new Uint8Array(300)) });
      const res = await put(ncps, p.narinfo.url, p.file);
      expect(res.status).toBe(400);
      expect(await res.text()).toContain("cannot be verified");
      const info = await put(ncps, `${p.hash}.narinfo`, p.text);
      expect(info.status).toBe(400);
      expect(await traces("upload-unverifiable", p)).toEqual({ narRecord: null, narBytes: false });
      expect((await fetch(`${ncps.url}/${p.hash}.narinfo`)).status).toBe(404);
    }
  });

  test("with --cache-accept-unverified-compression an uploaded bzip2 NAR is accepted on its FileHash", async () => {
    const ncps = await start("upload-unverifiable-accepted", { "cache-accept-unverified-compression": true });
    const p = await client.add("upload-bzip2-ok", { compression: "bzip2", fileBytes: crypto.getRandomValues(new Uint8Array(300)) });
    expect((await put(ncps, p.narinfo.url, p.file)).status).toBe(201);
    expect((await put(ncps, `${p.hash}.narinfo`, p.text)).status).toBe(201);
    expect((await fetch(`${ncps.url}/${p.narinfo.url}`)).status).toBe(200);
  });
});

describe("conflicting uploads for one store path", () => {
  test("of two concurrent conflicting narinfo PUTs, the loser's NAR is neither recorded nor served", async () => {
    const ncps = await start("race");
    for (let round = 0; round < 6; round++) {
      const a = await client.add(`race-${round}`, { size: 64 * 1024 });
      const b = await client.add(`race-${round}`, { size: 64 * 1024, edit: (n) => ({ ...n, storePath: a.storePath }) });
      expect(b.hash).not.toBe(a.hash); // the helper's own hash; the narinfo names a's path
      expect((await put(ncps, a.narinfo.url, a.file)).status).toBe(201);
      expect((await put(ncps, b.narinfo.url, b.file)).status).toBe(201);
      const [ra, rb] = await Promise.all([put(ncps, `${a.hash}.narinfo`, a.text), put(ncps, `${a.hash}.narinfo`, b.text)]);
      expect([ra.status, rb.status].sort()).toEqual([201, 409]);
      const [winner, loser] = ra.status === 201 ? [a, b] : [b, a];
      await ncps.cache.drain();
      expect(await traces("race", loser)).toEqual({ narRecord: null, narBytes: false });
      expect((await fetch(`${ncps.url}/${loser.narinfo.url}`)).status).toBe(404);
      expect((await fetch(`${ncps.url}/${winner.narinfo.url}`)).status).toBe(200);
    }
  });

  test("a conflict keeps a NAR that a recorded narinfo names", async () => {
    const ncps = await start("race-shared");
    const a = await client.add("shared-a");
    expect((await put(ncps, a.narinfo.url, a.file)).status).toBe(201);
    expect((await put(ncps, `${a.hash}.narinfo`, a.text)).status).toBe(201);
    // same path, same NAR, another narinfo text: a conflict that must not take a's NAR along
    const other = (await client.add("shared-a", { edit: (n) => ({ ...n, storePath: a.storePath, url: a.narinfo.url, fileHash: a.narinfo.fileHash, fileSize: a.narinfo.fileSize, narHash: a.narinfo.narHash, narSize: a.narinfo.narSize, deriver: `${randomHash()}-x.drv` }) })).text;
    expect((await put(ncps, `${a.hash}.narinfo`, other)).status).toBe(409);
    expect(await traces("race-shared", a)).toEqual({ narRecord: { key: parseNcpsNarRequest(a.narinfo.url).key }, narBytes: true });
    expect((await fetch(`${ncps.url}/${a.narinfo.url}`)).status).toBe(200);
  });
});

describe("references of an upload", () => {
  test("a reference listed 300 times is looked up upstream once", async () => {
    const ncps = await start("refs-dup");
    const held = await upstreamCache.add("held-upstream");
    const reference = held.storePath.slice("/nix/store/".length);
    const p = await client.add("dup-refs", { references: Array.from({ length: 300 }, () => reference) });
    expect((await put(ncps, p.narinfo.url, p.file)).status).toBe(201);
    expect((await put(ncps, `${p.hash}.narinfo`, p.text)).status).toBe(201);
    expect(upstream.hits(`/${held.hash}.narinfo`)).toBe(1);
  });

  test("an upload naming more distinct references than ncps checks upstream is refused without asking upstream", async () => {
    const ncps = await start("refs-many");
    const refs = Array.from({ length: 1100 }, (_, i) => `${randomHash()}-r${i}`);
    const p = await client.add("many-refs", { references: refs });
    expect((await put(ncps, p.narinfo.url, p.file)).status).toBe(201);
    const before = upstream.requests.length;
    const res = await put(ncps, `${p.hash}.narinfo`, p.text);
    expect(res.status).toBe(400);
    expect(await res.text()).toContain("references");
    expect(upstream.requests.length).toBe(before);
  });
});
