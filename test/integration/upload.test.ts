/** Uploads, deletes and tokens over HTTP: every refusal gets the right status and a one-line
 * reason and leaves storage and database as they were. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { serializeNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { formatPublicKey, generateSecretKey, signNarInfo, toPublicKey } from "../../src/nix/signature.ts";
import { CACHE_NIXOS_ORG_KEY, readFixture } from "../helpers/fixtures.ts";
import { startInProcess } from "../helpers/ncps.ts";

/** A minimal valid NAR: a regular file with `contents` (Nix's archive format, written out). */
function makeNar(contents: string): Uint8Array {
  const parts: Buffer[] = [];
  const str = (s: string | Buffer) => {
    const b = typeof s === "string" ? Buffer.from(s) : s;
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(b.length));
    parts.push(len, b, Buffer.alloc((8 - (b.length % 8)) % 8));
  };
  for (const s of ["nix-archive-1", "(", "type", "regular", "contents"]) str(s);
  str(Buffer.from(contents));
  str(")");
  return new Uint8Array(Buffer.concat(parts));
}

const sha = (b: Uint8Array) => `sha256:${encodeNix32(new Bun.CryptoHasher("sha256").update(b).digest())}`;
const storeHash = (seed: string) => encodeNix32(new Bun.CryptoHasher("sha1").update(seed).digest()).slice(0, 32);
const clientKey = generateSecretKey("client-1");
const strangerKey = generateSecretKey("stranger-1");

interface Upload {
  hash: string;
  nar: Uint8Array;
  narUrl: string;
  narinfo: NarInfo;
  text: string;
}

function makeUpload(name: string, opts: { references?: string[]; key?: typeof clientKey | null; zstd?: boolean; contentsBytes?: number } = {}): Upload {
  const contents = `contents of ${name} ${Math.random()}`;
  const narBytes = makeNar(opts.contentsBytes ? contents.padEnd(opts.contentsBytes, "x") : contents);
  const nar = opts.zstd ? new Uint8Array(Bun.zstdCompressSync(narBytes)) : narBytes;
  const hash = storeHash(name + Math.random());
  const fileHash = sha(nar);
  const narUrl = `nar/${fileHash.slice(7)}.nar${opts.zstd ? ".zst" : ""}`;
  let narinfo: NarInfo = {
    storePath: `/nix/store/${hash}-${name}`,
    url: narUrl,
    compression: opts.zstd ? "zstd" : "none",
    fileHash,
    fileSize: nar.length,
    narHash: sha(narBytes),
    narSize: narBytes.length,
    references: opts.references ?? [],
    sigs: [],
    extra: [],
  };
  if (opts.key !== null) narinfo = signNarInfo(narinfo, opts.key ?? clientKey);
  return { hash, nar, narUrl, narinfo, text: serializeNarInfo(narinfo) };
}

interface Instance {
  ncps: RunningNcps;
  dataDir: string;
  snapshot(): Promise<string>;
  req(path: string, init?: RequestInit & { token?: string }): Promise<Response>;
}

const work = await mkdtemp(join(tmpdir(), "ncps-upload-it-"));
const instances: Instance[] = [];
let upstream: ReturnType<typeof Bun.serve>;
let upstreamHits = 0;
/** "METHOD /path" of each upstream request */
const upstreamRequests: string[] = [];
const upstreamLogs = new Map<string, string>();
const FIXTURE = "n5glp21rsz314qssw9fbvfswgy3kc68f";

async function start(name: string, args: Record<string, unknown>): Promise<Instance> {
  const dataDir = join(work, name);
  const ncps = await startInProcess(dataDir, {
    "cache-upstream-url": [`http://127.0.0.1:${upstream.port}`],
    "cache-upstream-public-key": [CACHE_NIXOS_ORG_KEY],
    ...args,
  });
  const dbFile = join(dataDir, "db", "db.sqlite");
  const instance: Instance = {
    ncps,
    dataDir,
    async snapshot() {
      const files = async (dir: string): Promise<string[]> =>
        (await readdir(join(dataDir, dir), { recursive: true }).catch(() => [] as string[])).map(String).sort();
      const db = new Database(dbFile, { readonly: true });
      const rows = ["narinfos", "nars", "narinfo_references"].map((t) => db.query(`SELECT * FROM ${t} ORDER BY 1`).all());
      db.close();
      const tmp = (await files("tmp")).filter((f) => f.startsWith("ncps-"));
      return JSON.stringify({ nar: await files("nar"), log: await files("log"), tmp, rows });
    },
    req(path, init = {}) {
      const headers = new Headers(init.headers);
      if (init.token) headers.set("authorization", `Bearer ${init.token}`);
      return fetch(`${ncps.url}/${path}`, { ...init, headers });
    },
  };
  instances.push(instance);
  return instance;
}

/** The snapshot once the requests before have finished: an upload's temp file goes just
 * after its answer, and a full run once caught one still there in the "before" state. */
async function quietSnapshot(i: Instance): Promise<string> {
  await i.ncps.cache.drain();
  for (const until = Date.now() + 5_000; ; await Bun.sleep(20)) {
    const state = await i.snapshot();
    if (!state.includes('"tmp":["') || Date.now() > until) return state;
  }
}

/** The request is refused with `status` and a one-line reason, and nothing changed (since
 * `before`, by default the moment of the request). */
async function expectRefused(i: Instance, status: number, send: () => Promise<Response>, before?: string): Promise<string> {
  before ??= await quietSnapshot(i);
  const res = await send();
  const body = await res.text();
  expect(res.status).toBe(status);
  expect(body.trim().split("\n")).toHaveLength(1);
  await i.ncps.cache.drain();
  expect(await i.snapshot()).toBe(before);
  return body.trim();
}

const put = (i: Instance, path: string, body: RequestInit["body"], token?: string) => i.req(path, { method: "PUT", body, token });

let open: Instance;
let closed: Instance;

beforeAll(async () => {
  upstream = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      upstreamHits++;
      const path = new URL(req.url).pathname;
      upstreamRequests.push(`${req.method} ${path}`);
      const log = upstreamLogs.get(path);
      if (log !== undefined) return new Response(log);
      return path === `/${FIXTURE}.narinfo` ? new Response(readFixture(FIXTURE)) : new Response("not found", { status: 404 });
    },
  });
  open = await start("open", { "cache-allow-put-verb": true, "cache-allow-delete-verb": true, "cache-max-upload-size": "64K" });
  closed = await start("closed", {});
});

afterAll(async () => {
  for (const i of instances) await i.ncps.stop();
  upstream.stop(true);
  await rm(work, { recursive: true, force: true });
});

describe("uploads", () => {
  test("PUT and DELETE are refused with 405 unless enabled", async () => {
    const u = makeUpload("disabled");
    await expectRefused(closed, 405, () => put(closed, u.narUrl, u.nar));
    await expectRefused(closed, 405, () => put(closed, `${u.hash}.narinfo`, u.text));
    await expectRefused(closed, 405, () => closed.req(`${u.hash}.narinfo`, { method: "DELETE" }));
  });

  test("PUT /nix-cache-info is refused: ncps owns it", async () => {
    await expectRefused(open, 405, () => put(open, "nix-cache-info", "StoreDir: /elsewhere\n"));
    expect(await (await open.req("nix-cache-info")).text()).toContain("StoreDir: /nix/store");
  });

  test("a NAR whose body does not match the hash in its URL is refused", async () => {
    const u = makeUpload("mismatch");
    const other = makeUpload("other");
    const reason = await expectRefused(open, 400, () => put(open, u.narUrl, other.nar));
    expect(reason).toContain("hashes to");
  });

  test("a body over --cache-max-upload-size gets 413, declared or streamed", async () => {
    const big = new Uint8Array(70 * 1024);
    const url = `nar/${sha(big).slice(7)}.nar`;
    await expectRefused(open, 413, () => put(open, url, big));
    const stream = new ReadableStream({
      start(c) {
        for (let i = 0; i < 70; i++) c.enqueue(new Uint8Array(1024));
        c.close();
      },
    });
    await expectRefused(open, 413, () => put(open, url, stream));
  });

  test("malformed paths and narinfos get 400", async () => {
    const u = makeUpload("malformed");
    await expectRefused(open, 400, () => put(open, "nar/not-a-hash.nar", u.nar));
    await expectRefused(open, 400, () => put(open, "short.narinfo", u.text));
    await expectRefused(open, 400, () => put(open, `${u.hash}.narinfo`, "StorePath: /nix/store/x\n"));
    await expectRefused(open, 400, () => put(open, `${storeHash("elsewhere")}.narinfo`, u.text)); // hash of another path
    const reason = await expectRefused(open, 400, () => put(open, `${u.hash}.narinfo`, u.text)); // NAR never uploaded
    expect(reason).toContain("PUT the NAR first");
  });

  test("a narinfo that does not match its uploaded NAR is refused; the NAR it named is gone too", async () => {
    const u = makeUpload("wrong-narhash");
    const beforeNar = await open.snapshot();
    expect((await put(open, u.narUrl, u.nar)).status).toBe(201);
    const lying = serializeNarInfo(signNarInfo({ ...u.narinfo, narHash: sha(new Uint8Array([1])), sigs: [] }, clientKey));
    const reason = await expectRefused(open, 400, () => put(open, `${u.hash}.narinfo`, lying), beforeNar);
    expect(reason).toContain("NarHash");
  });

  describe("a refused narinfo takes the NAR uploaded for it along, whatever the reason", () => {
    const resign = (u: Upload, change: Partial<NarInfo>) => serializeNarInfo(signNarInfo({ ...u.narinfo, ...change, sigs: [] }, clientKey));
    const refusals: { reason: string; status: number; says: string; zstd?: boolean; narinfo: (u: Upload) => { hash?: string; text: string } }[] = [
      { reason: "it is another path's narinfo", status: 400, says: "not", narinfo: (u) => ({ hash: storeHash(`other ${Math.random()}`), text: u.text }) },
      { reason: "its Compression does not match its URL", status: 400, says: "Compression", narinfo: (u) => ({ text: resign(u, { compression: "xz" }) }) },
      { reason: "its FileHash does not match its URL", status: 400, says: "FileHash", narinfo: (u) => ({ text: resign(u, { fileHash: sha(new Uint8Array([2])) }) }) },
      { reason: "its FileSize does not match the NAR", status: 400, says: "FileSize", zstd: true, narinfo: (u) => ({ text: resign(u, { fileSize: u.nar.length + 1 }) }) },
      { reason: "its NarHash does not match the NAR", status: 400, says: "NarHash", narinfo: (u) => ({ text: resign(u, { narHash: sha(new Uint8Array([1])) }) }) },
      { reason: "its NarSize does not match the NAR", status: 400, says: "NarSize", zstd: true, narinfo: (u) => ({ text: resign(u, { narSize: u.narinfo.narSize + 8 }) }) },
      { reason: "a reference is neither in ncps nor upstream", status: 400, says: "reference", narinfo: (u) => ({ text: resign(u, { references: [`${storeHash(`nowhere ${Math.random()}`)}-nowhere`] }) }) },
      {
        reason: "it names more references than ncps looks up",
        status: 400,
        says: "references",
        narinfo: (u) => ({ text: resign(u, { references: Array.from({ length: 1001 }, (_, i) => `${storeHash(`r${i} ${Math.random()}`)}-r${i}`) }) }),
      },
    ];
    for (const refusal of refusals) {
      test(`${refusal.reason}: ${refusal.status}, and storage and database are as before the NAR came`, async () => {
        const u = makeUpload("refused", { zstd: refusal.zstd });
        const before = await open.snapshot();
        expect((await put(open, u.narUrl, u.nar)).status).toBe(201);
        const { hash = u.hash, text } = refusal.narinfo(u);
        expect(await expectRefused(open, refusal.status, () => put(open, `${hash}.narinfo`, text), before)).toContain(refusal.says);
      });
    }

    test("a refused narinfo racing an accepted one for the same NAR never takes the accepted one's NAR", async () => {
      for (let round = 0; round < 8; round++) {
        const big = makeUpload(`race-${round}`, { contentsBytes: 48 * 1024 });
        expect((await put(open, big.narUrl, big.nar)).status).toBe(201);
        const other = makeUpload(`race-other-${round}`);
        const refused = resign({ ...big, narinfo: { ...big.narinfo, storePath: other.narinfo.storePath } }, { references: [`${storeHash(`nowhere ${Math.random()}`)}-nowhere`] });
        const [accepted, rejected] = await Promise.all([put(open, `${big.hash}.narinfo`, big.text), put(open, `${other.hash}.narinfo`, refused)]);
        expect([accepted.status, rejected.status]).toEqual([201, 400]);
        const nar = await open.req(big.narUrl);
        expect(nar.status).toBe(200);
        expect(Buffer.from(await nar.arrayBuffer()).equals(Buffer.from(big.nar))).toBe(true);
      }
    });

    test("a refused narinfo naming a NAR a recorded narinfo names leaves that NAR served", async () => {
      const kept = makeUpload("kept");
      expect((await put(open, kept.narUrl, kept.nar)).status).toBe(201);
      expect((await put(open, `${kept.hash}.narinfo`, kept.text)).status).toBe(201);
      const other = makeUpload("sharing");
      const sharing = serializeNarInfo(
        signNarInfo({ ...kept.narinfo, storePath: other.narinfo.storePath, references: [`${storeHash(`nowhere ${Math.random()}`)}-nowhere`], sigs: [] }, clientKey),
      );
      await expectRefused(open, 400, () => put(open, `${other.hash}.narinfo`, sharing));
      expect(Buffer.from(await (await open.req(kept.narUrl)).arrayBuffer()).equals(Buffer.from(kept.nar))).toBe(true);
    });
  });

  test("a PUT of anything but a narinfo, NAR or log is a 400, not a 500", async () => {
    const u = makeUpload("listing");
    await expectRefused(open, 400, () => put(open, `${u.hash}.ls`, "{}"));
    await expectRefused(open, 400, () => put(open, "upload/whatever", "x"));
  });

  test("a reference neither in ncps nor upstream is refused; one upstream has is accepted", async () => {
    const missingRef = `${storeHash("nowhere")}-nowhere`;
    const u = makeUpload("dangling", { references: [missingRef] });
    const beforeNar = await open.snapshot();
    expect((await put(open, u.narUrl, u.nar)).status).toBe(201);
    const reason = await expectRefused(open, 400, () => put(open, `${u.hash}.narinfo`, u.text), beforeNar);
    expect(reason).toContain(missingRef);
    const ok = makeUpload("upstream-ref", { references: [`${FIXTURE}-hello-2.12.1`] });
    expect((await put(open, ok.narUrl, ok.nar)).status).toBe(201);
    expect((await put(open, `${ok.hash}.narinfo`, ok.text)).status).toBe(201);
  });

  test("upload, identical re-upload (unchanged), different narinfo for the same path (409)", async () => {
    const u = makeUpload("roundtrip");
    expect((await put(open, u.narUrl, u.nar)).status).toBe(201);
    expect((await put(open, `${u.hash}.narinfo`, u.text)).status).toBe(201);
    const served = await (await open.req(`${u.hash}.narinfo`)).text();
    expect(served).toContain("Sig: client-1:");
    expect(served).toContain("Sig: ncps-test:");
    expect(Buffer.from(await (await open.req(u.narUrl)).arrayBuffer()).equals(Buffer.from(u.nar))).toBe(true);
    expect((await put(open, u.narUrl, u.nar)).status).toBe(200);
    expect((await put(open, `${u.hash}.narinfo`, u.text)).status).toBe(200);
    const different = serializeNarInfo(signNarInfo({ ...u.narinfo, deriver: "unknown-deriver" }, clientKey));
    await expectRefused(open, 409, () => put(open, `${u.hash}.narinfo`, different));
    expect(await (await open.req(`${u.hash}.narinfo`)).text()).toBe(served);
  });

  test("the /upload/ prefix: PUT works there, GET/HEAD never ask an upstream", async () => {
    const hitsBefore = upstreamHits;
    expect((await open.req(`upload/${FIXTURE}.narinfo`)).status).toBe(404);
    expect((await open.req(`upload/${FIXTURE}.narinfo`, { method: "HEAD" })).status).toBe(404);
    expect(upstreamHits).toBe(hitsBefore);
    const u = makeUpload("prefixed");
    expect((await put(open, `upload/${u.narUrl}`, u.nar)).status).toBe(201);
    expect((await put(open, `upload/${u.hash}.narinfo`, u.text)).status).toBe(201);
    expect((await open.req(`upload/${u.hash}.narinfo`)).status).toBe(200);
    expect((await open.req(`upload/${u.narUrl}`, { method: "HEAD" })).status).toBe(200);
  });

  test("an untrusted signature gets 403 with --cache-require-trusted-signature", async () => {
    const strict = await start("strict", {
      "cache-allow-put-verb": true,
      "cache-require-trusted-signature": true,
      "cache-trusted-upload-key": [formatPublicKey(toPublicKey(clientKey))],
    });
    for (const key of [strangerKey, null]) {
      const u = makeUpload("untrusted", { key });
      const beforeNar = await strict.snapshot();
      expect((await put(strict, u.narUrl, u.nar)).status).toBe(201);
      // nothing stored: the NAR that came first goes with the refused narinfo
      await expectRefused(strict, 403, () => put(strict, `${u.hash}.narinfo`, u.text), beforeNar);
    }
    const trusted = makeUpload("trusted");
    expect((await put(strict, trusted.narUrl, trusted.nar)).status).toBe(201);
    expect((await put(strict, `${trusted.hash}.narinfo`, trusted.text)).status).toBe(201);
  });
});

describe("Expect: 100-continue (libcurl sends it on every PUT)", () => {
  /** Sends only the request head and reads what the server says before any body byte. */
  function headOnly(url: string, path: string, length: number): Promise<string> {
    const { hostname, port } = new URL(url);
    return new Promise((resolve, reject) => {
      const socket = connect(Number(port), hostname, () =>
        socket.write(`PUT /${path} HTTP/1.1\r\nHost: ${hostname}\r\nContent-Length: ${length}\r\nExpect: 100-continue\r\n\r\n`),
      );
      let seen = "";
      socket.on("data", (d) => {
        seen += d.toString();
        // a final status (not 100) ends the exchange; 100 alone means "send the body"
        if (/HTTP\/1\.1 [2-5]\d\d/.test(seen) || /^HTTP\/1\.1 100[^\n]*\r\n\r\n$/.test(seen)) {
          socket.destroy();
          resolve(seen);
        }
      });
      socket.on("error", reject);
    });
  }

  test("an enabled PUT is answered 100 Continue before the body is sent", async () => {
    const u = makeUpload("expect");
    expect(await headOnly(open.ncps.url, u.narUrl, u.nar.length)).toMatch(/^HTTP\/1\.1 100 Continue/);
  });

  test("a disabled PUT is answered 405 without the body ever being sent", async () => {
    const u = makeUpload("expect-disabled");
    expect(await headOnly(closed.ncps.url, u.narUrl, 10_000_000)).toMatch(/HTTP\/1\.1 405/);
  });
});

describe("build logs", () => {
  test("GET /log falls back to the upstreams; a log PUT over the size limit is 413; disabled PUT is 405", async () => {
    const drv = `${storeHash("logged")}-logged.drv`;
    upstreamLogs.set(`/log/${drv}`, "upstream build log\n");
    const res = await open.req(`log/${drv}`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("upstream build log\n");
    expect((await open.req(`log/${storeHash("nolog")}-nolog.drv`)).status).toBe(404);
    await expectRefused(open, 413, () => put(open, `log/${drv}`, new Uint8Array(70 * 1024)));
    await expectRefused(closed, 405, () => put(closed, `log/${drv}`, "log"));
  });

  test("HEAD /log asks the upstreams with HEAD: the log's length, and no log downloaded", async () => {
    const drv = `${storeHash("headed")}-headed.drv`;
    const log = "a log nobody downloads\n".repeat(1000);
    upstreamLogs.set(`/log/${drv}`, log);
    const res = await open.req(`log/${drv}`, { method: "HEAD" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-length")).toBe(String(log.length));
    const missing = `${storeHash("headless")}-headless.drv`;
    expect((await open.req(`log/${missing}`, { method: "HEAD" })).status).toBe(404);
    const asked = upstreamRequests.filter((r) => r.endsWith(`/log/${drv}`) || r.endsWith(`/log/${missing}`));
    expect(asked).toEqual([`HEAD /log/${drv}`, `HEAD /log/${missing}`]);
    // and a GET still brings the log itself
    expect(await (await open.req(`log/${drv}`)).text()).toBe(log);
  });

  test("HEAD /log of an upstream log over the 64 MiB a GET would take is refused as the GET is", async () => {
    const drv = `${storeHash("huge")}-huge.drv`;
    upstreamLogs.set(`/log/${drv}`, "x".repeat(64 * 1024 * 1024 + 1));
    try {
      const head = await open.req(`log/${drv}`, { method: "HEAD" });
      const get = await open.req(`log/${drv}`);
      await get.body?.cancel();
      expect(get.status).toBe(502);
      expect(head.status).toBe(get.status);
      expect(head.headers.get("content-length")).not.toBe(String(64 * 1024 * 1024 + 1));
    } finally {
      upstreamLogs.delete(`/log/${drv}`);
    }
  });
});

describe("deletes", () => {
  test("DELETE of a narinfo removes the record and its NAR; DELETE of a NAR removes the narinfos naming it", async () => {
    const a = makeUpload("delete-a");
    const b = makeUpload("delete-b");
    for (const u of [a, b]) {
      expect((await put(open, u.narUrl, u.nar)).status).toBe(201);
      expect((await put(open, `${u.hash}.narinfo`, u.text)).status).toBe(201);
    }
    const onDisk = (u: Upload) => Bun.file(join(open.dataDir, u.narUrl)).exists();
    expect(await onDisk(a)).toBe(true);
    expect((await open.req(`${a.hash}.narinfo`, { method: "DELETE" })).status).toBe(204);
    expect((await open.req(`${a.hash}.narinfo`)).status).toBe(404);
    expect((await open.req(a.narUrl)).status).toBe(404);
    expect(await onDisk(a)).toBe(false);
    expect((await open.req(b.narUrl, { method: "DELETE" })).status).toBe(204);
    expect((await open.req(`${b.hash}.narinfo`)).status).toBe(404);
    expect((await open.req(b.narUrl)).status).toBe(404);
    expect(await onDisk(b)).toBe(false);
    expect((await open.req(`${b.hash}.narinfo`, { method: "DELETE" })).status).toBe(404);
  });

  test("deleting one of two narinfos that name one NAR keeps the NAR for the other", async () => {
    const first = makeUpload("shared-a");
    // a second store path whose NAR is byte-identical (same contents, same FileHash)
    const hash = storeHash("shared-b");
    const second = serializeNarInfo(signNarInfo({ ...first.narinfo, storePath: `/nix/store/${hash}-shared-b`, sigs: [] }, clientKey));
    expect((await put(open, first.narUrl, first.nar)).status).toBe(201);
    expect((await put(open, `${first.hash}.narinfo`, first.text)).status).toBe(201);
    expect((await put(open, `${hash}.narinfo`, second)).status).toBe(201);
    expect((await open.req(`${first.hash}.narinfo`, { method: "DELETE" })).status).toBe(204);
    expect(await Bun.file(join(open.dataDir, first.narUrl)).exists()).toBe(true);
    expect(Buffer.from(await (await open.req(first.narUrl)).arrayBuffer()).equals(Buffer.from(first.nar))).toBe(true);
    expect((await open.req(`${hash}.narinfo`)).status).toBe(200);
  });
});

describe("tokens", () => {
  let guarded: Instance;
  beforeAll(async () => {
    guarded = await start("guarded", { "cache-allow-put-verb": true, "cache-get-token": "read-secret", "cache-put-token": "write-secret" });
  });

  test("reads need the get token, as Bearer or as the Basic password; /healthz stays open", async () => {
    const res = await guarded.req("nix-cache-info");
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toContain("Basic");
    expect((await guarded.req("nix-cache-info", { token: "wrong" })).status).toBe(401);
    expect((await guarded.req("nix-cache-info", { token: "read-secret" })).status).toBe(200);
    const basic = "Basic " + Buffer.from("anyone:read-secret").toString("base64");
    expect((await guarded.req("nix-cache-info", { headers: { authorization: basic } })).status).toBe(200);
    expect((await guarded.req("healthz")).status).toBe(200);
    // the put token reads too: `nix copy --to` reads before it writes, with one netrc password
    expect((await guarded.req("nix-cache-info", { token: "write-secret" })).status).toBe(200);
  });

  test("every read route and verb needs the token, not only nix-cache-info", async () => {
    const u = makeUpload("token-routes");
    expect((await put(guarded, u.narUrl, u.nar, "write-secret")).status).toBe(201);
    expect((await put(guarded, `${u.hash}.narinfo`, u.text, "write-secret")).status).toBe(201);
    const wrongBasic = "Basic " + Buffer.from("anyone:nope").toString("base64");
    for (const path of [`${u.hash}.narinfo`, u.narUrl, `upload/${u.hash}.narinfo`, "pubkey", "", `log/${u.hash}-x.drv`]) {
      for (const method of ["GET", "HEAD"]) {
        expect([path, method, (await guarded.req(path, { method })).status]).toEqual([path, method, 401]);
        expect([path, method, (await guarded.req(path, { method, headers: { authorization: wrongBasic } })).status]).toEqual([path, method, 401]);
      }
      expect((await guarded.req(path, { token: "read-secret" })).status).not.toBe(401);
    }
    await expectRefused(guarded, 401, () => guarded.req(`${u.hash}.narinfo`, { method: "DELETE" }));
    await expectRefused(guarded, 401, () => guarded.req(`${u.hash}.narinfo`, { method: "DELETE", token: "read-secret" }));
  });

  test("writes need the put token; the get token is not enough", async () => {
    const u = makeUpload("guarded");
    await expectRefused(guarded, 401, () => put(guarded, u.narUrl, u.nar));
    await expectRefused(guarded, 401, () => put(guarded, u.narUrl, u.nar, "read-secret"));
    expect((await put(guarded, u.narUrl, u.nar, "write-secret")).status).toBe(201);
  });
});
