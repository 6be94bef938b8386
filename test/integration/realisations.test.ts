/** Realisations over HTTP without the Nix client (test/e2e/realisations.test.ts has it): the
 * pull-through from a real HTTP upstream with its signature rules and negative cache, the
 * uploads of both formats with their refusals, and a realisation going with its output path. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import {
  drvOutputId,
  parseBuildTraceTarget,
  parseRealisation,
  parseRealisationFileName,
  realisationPath,
  renderRealisation,
  signRealisation,
  trustedRealisationSignatures,
  type DrvOutput,
  type Realisation,
} from "../../src/nix/realisation.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { formatPublicKey, generateSecretKey, parsePublicKey, toPublicKey, type SecretKey } from "../../src/nix/signature.ts";
import { eventually } from "../helpers/eventually.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { makeSyntheticCache, type SyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const work = await mkdtemp(join(tmpdir(), "ncps-realisations-"));
let upstreamCache: SyntheticCache;
let upstream: Upstream;
/** store paths the upstream serves: outputs realisations can name */
let outA: SyntheticPath;
let outB: SyntheticPath;
const clientKey = generateSecretKey("builder-1");
const running: RunningNcps[] = [];
let instances = 0;

async function start(args: Record<string, unknown> = {}): Promise<RunningNcps> {
  const ncps = await startInProcess(join(work, `ncps-${++instances}`), {
    "cache-upstream-url": [upstream.url],
    "cache-upstream-public-key": [upstreamCache.publicKey],
    "cache-upstream-negative-ttl": "1h",
    ...args,
  });
  running.push(ncps);
  return ncps;
}

const randomHex = () => Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex");
const newRealisationId = (output = "out") => parseRealisationFileName(`sha256:${randomHex()}!${output}.doi`);
const newBuildTraceId = () => parseBuildTraceTarget(`${encodeNix32(crypto.getRandomValues(new Uint8Array(20)))}-x.drv`, "out");
const baseName = (p: SyntheticPath) => p.storePath.slice("/nix/store/".length);

function realisation(id: DrvOutput, out: SyntheticPath, key?: SecretKey): Realisation {
  const r: Realisation = { id, outPath: baseName(out), signatures: [], dependentRealisations: {} };
  return key ? signRealisation(r, key) : r;
}

/** Puts a document where the upstream serves it. */
async function publish(id: DrvOutput, text: string) {
  const file = join(upstreamCache.dir, realisationPath(id));
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, text);
}

const get = (ncps: RunningNcps, path: string, init?: RequestInit) => fetch(`${ncps.url}/${path}`, init);
const put = (ncps: RunningNcps, path: string, body: string) => fetch(`${ncps.url}/${path}`, { method: "PUT", body });

/** The document served, with the signatures that verify under `keys`. */
async function served(res: Response, id: DrvOutput, keys: string[]) {
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("application/json");
  const text = await res.text();
  const r = parseRealisation(text, id);
  return { r, text, verified: trustedRealisationSignatures(r, keys.map(parsePublicKey)).map((s) => s.slice(0, s.indexOf(":"))).sort() };
}

beforeAll(async () => {
  upstreamCache = await makeSyntheticCache(join(work, "upstream"));
  upstream = await startUpstream(upstreamCache.dir);
  outA = await upstreamCache.add("ca-out-a");
  outB = await upstreamCache.add("ca-out-b");
});

afterAll(async () => {
  for (const n of running) await n.stop();
  await upstream.stop();
  await rm(work, { recursive: true, force: true });
});

describe("pull-through", () => {
  test("a realisation an upstream signed is fetched once, kept, and served re-signed by ncps beside the upstream's signature", async () => {
    const ncps = await start();
    const id = newRealisationId();
    await publish(id, renderRealisation(realisation(id, outA, upstreamCache.key)));
    const path = realisationPath(id);
    const { r, verified } = await served(await get(ncps, path), id, [upstreamCache.publicKey, ncps.publicKey]);
    expect(r.outPath).toBe(baseName(outA));
    expect(verified).toEqual(["ncps-test", "synthetic-upstream-1"]);
    const again = await get(ncps, path);
    expect(again.status).toBe(200);
    await again.text();
    expect(upstream.hits(`/${path}`)).toBe(1);
    // held now: the /upload/ prefix, which never asks an upstream, has it too; HEAD says its size
    const head = await get(ncps, `upload/${path}`, { method: "HEAD" });
    expect([head.status, Number(head.headers.get("content-length")) > 100, await head.text()]).toEqual([200, true, ""]);
  });

  test("a build trace an upstream signed is fetched from its build-trace-v2 path and served in Nix's form", async () => {
    const ncps = await start();
    const id = newBuildTraceId();
    await publish(id, renderRealisation(realisation(id, outB, upstreamCache.key)));
    const { r, verified, text } = await served(await get(ncps, realisationPath(id)), id, [upstreamCache.publicKey, ncps.publicKey]);
    expect(r.outPath).toBe(baseName(outB));
    expect(verified).toEqual(["ncps-test", "synthetic-upstream-1"]);
    expect(Object.keys(JSON.parse(text))).toEqual(["outPath", "signatures"]);
    // without .doi (the Go ncps accepts both)
    expect((await get(ncps, realisationPath(id).slice(0, -".doi".length))).status).toBe(200);
  });

  test("unsigned, untrusted, tampered, mislabelled, malformed or oversized upstream realisations are absent, and nothing is kept", async () => {
    const ncps = await start();
    const stranger = generateSecretKey("stranger-1");
    const cases: [string, (id: DrvOutput) => string][] = [
      ["unsigned", (id) => renderRealisation(realisation(id, outA))],
      ["untrusted", (id) => renderRealisation(realisation(id, outA, stranger))],
      ["tampered", (id) => renderRealisation({ ...realisation(id, outA, upstreamCache.key), outPath: baseName(outB) })],
      ["another id", (id) => renderRealisation(realisation(newRealisationId(), outA, upstreamCache.key)).replace(/"id":"[^"]*"/, `"id":"${drvOutputId(newRealisationId())}"`)],
      ["not JSON", () => "<html>"],
      ["oversized", (id) => renderRealisation(realisation(id, outA, upstreamCache.key)).replace("{", `{"x":"${"a".repeat(1024 * 1024)}",`)],
    ];
    for (const [what, doc] of cases) {
      const id = newRealisationId();
      await publish(id, doc(id));
      const res = await get(ncps, realisationPath(id));
      expect([what, res.status]).toEqual([what, 404]);
      expect([what, (await get(ncps, `upload/${realisationPath(id)}`)).status]).toEqual([what, 404]);
    }
    const signed = newRealisationId();
    await publish(signed, renderRealisation(realisation(signed, outA, upstreamCache.key)));
    expect((await get(ncps, realisationPath(signed))).status).toBe(200);
  });

  test("a miss is remembered like a narinfo's, and /upload/ never asks an upstream", async () => {
    const ncps = await start();
    const id = newRealisationId();
    const path = realisationPath(id);
    expect((await get(ncps, `upload/${path}`)).status).toBe(404);
    expect(upstream.hits(`/${path}`)).toBe(0);
    expect((await get(ncps, path)).status).toBe(404);
    expect((await get(ncps, path)).status).toBe(404);
    expect(upstream.hits(`/${path}`)).toBe(1);
  });

  test("an upstream that hangs costs a lookup its deadline, then a 404", async () => {
    const ncps = await start({ "cache-upstream-response-header-timeout": "500ms", "cache-upstream-dialer-timeout": "500ms" });
    const id = newRealisationId();
    upstream.fault(`/${realisationPath(id)}`, { kind: "hang" });
    // without the deadline this request would outlive the test's own timeout
    expect((await get(ncps, realisationPath(id))).status).toBe(404);
  });
});

describe("uploads", () => {
  let ncps: RunningNcps;
  beforeAll(async () => {
    ncps = await start({ "cache-allow-put-verb": true, "cache-allow-delete-verb": true });
  });

  test("nix copy's PUT is recorded, signed by ncps beside the builder; the same again is unchanged, another output a conflict", async () => {
    const id = newRealisationId();
    const path = realisationPath(id);
    const first = await put(ncps, path, renderRealisation(realisation(id, outA, clientKey)));
    expect(first.status).toBe(201);
    const { r, verified } = await served(await get(ncps, path), id, [formatPublicKey(toPublicKey(clientKey)), ncps.publicKey]);
    expect([r.outPath, verified]).toEqual([baseName(outA), ["builder-1", "ncps-test"]]);
    expect((await put(ncps, `upload/${path}`, renderRealisation(realisation(id, outA)))).status).toBe(200);
    const conflict = await put(ncps, path, renderRealisation(realisation(id, outB, clientKey)));
    expect([conflict.status, (await conflict.text()).trim().split("\n").length]).toEqual([409, 1]);
    expect((await served(await get(ncps, path), id, [])).r.outPath).toBe(baseName(outA));
  });

  test("the Go ncps's PUT /upload/build-trace-v2/{drv}/{output} is recorded and served in Nix's form", async () => {
    const id = newBuildTraceId() as DrvOutput & { kind: "build-trace" };
    const goBody = JSON.stringify({
      key: { drvPath: `/nix/store/${id.drvName}`, outputName: "out" },
      value: { outPath: outA.storePath, signatures: [] },
    });
    const res = await put(ncps, `upload/build-trace-v2/${id.drvName}/out`, goBody);
    expect(res.status).toBe(201);
    const { r, verified } = await served(await get(ncps, `build-trace-v2/${id.drvName}/out.doi`), id, [ncps.publicKey]);
    expect([r.outPath, verified]).toEqual([baseName(outA), ["ncps-test"]]);
    const mismatch = goBody.replace(`/nix/store/${id.drvName}`, `/nix/store/${outB.hash}-y.drv`);
    expect((await put(ncps, `upload/build-trace-v2/${id.drvName}/out`, mismatch)).status).toBe(400);
  });

  test("bad input is a 400 (413 when too large) with one line, and nothing is stored", async () => {
    const id = newRealisationId();
    const path = realisationPath(id);
    const good = renderRealisation(realisation(id, outA));
    const absent = { ...realisation(id, outA), outPath: `${outA.hash.slice(0, 31)}0-nowhere` };
    const cases: [string, string, string, number][] = [
      ["malformed hash", `realisations/sha256:${"z".repeat(64)}!out.doi`, good, 400],
      ["no .doi", path.slice(0, -4), good, 400],
      ["bad output name", `realisations/${drvOutputId(id).replace("!out", "!o$t")}.doi`, good, 400],
      ["not JSON", path, "{", 400],
      ["another id", path, good.replace("!out", "!dev"), 400],
      ["unknown field", path, good.replace("{", '{"extra":1,'), 400],
      ["bad signature", path, good.replace('"signatures":[]', '"signatures":["k:bm90IDY0IGJ5dGVz"]'), 400],
      ["output neither held nor upstream", path, renderRealisation(absent), 400],
      ["too large", path, good.replace("{", `{"x":"${"a".repeat(1024 * 1024)}",`), 413],
    ];
    for (const [what, target, body, status] of cases) {
      const res = await put(ncps, target, body);
      const text = await res.text();
      expect([what, res.status, text.trim().split("\n").length]).toEqual([what, status, 1]);
    }
    expect((await get(ncps, `upload/${path}`)).status).toBe(404);
  });

  test("PUT is refused (405) unless --cache-allow-put-verb", async () => {
    const readOnly = await start();
    const id = newRealisationId();
    const res = await put(readOnly, realisationPath(id), renderRealisation(realisation(id, outA)));
    expect(res.status).toBe(405);
    expect((await get(readOnly, `upload/${realisationPath(id)}`)).status).toBe(404);
  });

  test("--cache-require-trusted-signature: a realisation needs a valid signature by a trusted upload key (403 otherwise)", async () => {
    const strict = await start({
      "cache-allow-put-verb": true,
      "cache-require-trusted-signature": true,
      "cache-trusted-upload-key": [formatPublicKey(toPublicKey(clientKey))],
    });
    const id = newRealisationId();
    const path = realisationPath(id);
    for (const body of [realisation(id, outA), realisation(id, outA, generateSecretKey("builder-1")), { ...realisation(id, outB, clientKey), outPath: baseName(outA) }]) {
      const res = await put(strict, path, renderRealisation(body));
      expect([res.status, (await res.text()).trim().split("\n").length]).toEqual([403, 1]);
    }
    expect((await get(strict, `upload/${path}`)).status).toBe(404);
    expect((await put(strict, path, renderRealisation(realisation(id, outA, clientKey)))).status).toBe(201);
  });

  test("deleting the output path's narinfo deletes the realisations naming it; ncps then fetches them again", async () => {
    const own = await upstreamCache.add("ca-out-deleted");
    const id = newRealisationId();
    expect((await put(ncps, realisationPath(id), renderRealisation(realisation(id, own)))).status).toBe(201);
    expect((await get(ncps, `${own.hash}.narinfo`)).status).toBe(200); // held now
    const del = await fetch(`${ncps.url}/${own.hash}.narinfo`, { method: "DELETE" });
    expect(del.status).toBe(204);
    expect((await get(ncps, `upload/${realisationPath(id)}`)).status).toBe(404);
    // an upstream's copy comes back on the next request, as the narinfo does
    await publish(id, renderRealisation(realisation(id, own, upstreamCache.key)));
    expect((await get(ncps, realisationPath(id))).status).toBe(200);
  });

  test("eviction of the output path takes its realisations along", async () => {
    const [first, second] = [await upstreamCache.add("ca-evicted"), await upstreamCache.add("ca-kept")];
    // room for one of the two 4 KiB NARs
    const small = await start({ "cache-allow-put-verb": true, "cache-max-size": "6000" });
    /** narinfo then NAR, as Nix fetches a path, then the eviction pass its commit starts */
    const fetchPath = async (p: SyntheticPath) => {
      const narinfo = await get(small, `${p.hash}.narinfo`);
      const url = /^URL: (.*)$/m.exec(await narinfo.text())![1]!;
      expect((await get(small, url)).status).toBe(200);
      await eventually(`${url} downloaded`, () => !small.cache.isDownloading(url), { everyMs: 5 });
      await small.eviction!.trigger("manual");
    };
    await fetchPath(first);
    const id = newRealisationId();
    expect((await put(small, realisationPath(id), renderRealisation(realisation(id, first)))).status).toBe(201);
    await fetchPath(second);
    expect((await get(small, `upload/${first.hash}.narinfo`)).status).toBe(404); // evicted
    expect((await get(small, `upload/${realisationPath(id)}`)).status).toBe(404);
  });
});
