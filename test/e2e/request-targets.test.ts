/** What is authorised is what is routed: with read and write tokens set, no request target,
 * Host header or verb reaches a narinfo, a NAR, a log or a write without the token. Only the
 * exact open paths /healthz and (with --prometheus-enabled) /metrics answer without one. Runs against the compiled binary in CI. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { parseBuildTraceTarget, parseRealisationFileName, realisationPath, renderRealisation, signRealisation, type DrvOutput } from "../../src/nix/realisation.ts";
import { startNcpsProcess, type NcpsProcess } from "../helpers/ncps.ts";
import { rawRequest } from "../helpers/raw-http.ts";
import { makeSyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const READ_TOKEN = "read-secret";
const WRITE_TOKEN = "write-secret";
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe("request targets and the tokens", () => {
  let work: string;
  let upstream: Upstream;
  let ncps: NcpsProcess;
  let path: SyntheticPath;
  let port: number;
  let narUrl: string;
  let narinfoText: string;
  let realisation: DrvOutput;
  let buildTrace: DrvOutput;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "ncps-targets-"));
    const cache = await makeSyntheticCache(join(work, "upstream"));
    path = await cache.add("secret-thing");
    // a realisation and a build trace of the path, which the upstream signed
    realisation = parseRealisationFileName(`sha256:${"5a".repeat(32)}!out.doi`);
    buildTrace = parseBuildTraceTarget(`${path.hash}-secret-thing.drv`, "out");
    for (const id of [realisation, buildTrace]) {
      const file = join(cache.dir, realisationPath(id));
      await mkdir(dirname(file), { recursive: true });
      const outPath = path.storePath.slice("/nix/store/".length);
      await writeFile(file, renderRealisation(signRealisation({ id, outPath, signatures: [], dependentRealisations: {} }, cache.key)));
    }
    upstream = await startUpstream(cache.dir);
    ncps = await startNcpsProcess({
      dataDir: join(work, "ncps"),
      args: [
        ...["--cache-upstream-url", upstream.url, "--cache-upstream-public-key", cache.publicKey],
        ...["--cache-get-token", READ_TOKEN, "--cache-put-token", WRITE_TOKEN],
        ...["--cache-allow-put-verb", "--cache-allow-delete-verb"],
        "--prometheus-enabled",
      ],
    });
    port = Number(new URL(ncps.url).port);
    // Warm the cache with the token: a bypass would now be served from ncps's own storage.
    const narinfo = await fetch(`${ncps.url}/${path.hash}.narinfo`, { headers: bearer(READ_TOKEN) });
    expect(narinfo.status).toBe(200);
    narinfoText = await narinfo.text();
    narUrl = `/${/^URL: (.*)$/m.exec(narinfoText)![1]}`;
    const nar = await fetch(`${ncps.url}${narUrl}`, { headers: bearer(READ_TOKEN) });
    expect(Buffer.from(await nar.arrayBuffer()).equals(Buffer.from(path.file))).toBe(true);
    for (const id of [realisation, buildTrace]) {
      expect((await fetch(`${ncps.url}/${realisationPath(id)}`, { headers: bearer(READ_TOKEN) })).status).toBe(200);
    }
  }, 60_000);

  afterAll(async () => {
    await ncps?.stop();
    await upstream?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** Every route's path, as a client would name it. */
  const protectedPaths = () => [
    `/${path.hash}.narinfo`,
    `/upload/${path.hash}.narinfo`,
    narUrl,
    `/upload${narUrl}`,
    "/nix-cache-info",
    "/upload/nix-cache-info",
    "/pubkey",
    "/upload/pubkey",
    "/",
    `/log/${path.storePath.slice("/nix/store/".length)}.drv`,
    `/upload/log/${path.storePath.slice("/nix/store/".length)}.drv`,
    "/pins",
    `/pin/${path.hash}.narinfo`,
    `/${realisationPath(realisation)}`,
    `/upload/${realisationPath(realisation)}`,
    `/${realisationPath(buildTrace)}`,
    `/upload/${realisationPath(buildTrace).slice(0, -".doi".length)}`,
    "/unknown/thing",
  ];

  /** Ways to spell a target so that a parser might see /healthz, or another path, where the
   * router sees the resource. */
  const spellings = (p: string, host: string): string[] => [
    p,
    `/healthz?x=${p}`,
    `/healthz?${p.slice(1)}`,
    `/healthz#${p}`,
    `/healthz/..${p}`,
    `/healthz%2f..${p}`,
    `/healthz%2F${p.slice(1)}`,
    `${p}?/healthz`,
    `/${p}`,
    p.replaceAll("/", "%2F"),
    `/%2e${p}`,
    `http://${host}${p}`,
    `http://${host}/healthz?${p}`,
    `https://other.example${p}`,
  ];

  const hosts = ["", "a", "ab", "abc", "abcd", "abcde", "127.0.0.1", `127.0.0.1:${"9".repeat(5)}`, "x".repeat(300)];
  const verbs = ["GET", "HEAD", "PUT", "DELETE", "POST", "OPTIONS"];

  test("without a token, no target, Host or verb gets anything but 401 or 400, except GET/HEAD /healthz", async () => {
    const leaks: string[] = [];
    let requests = 0;
    for (const host of hosts) {
      for (const verb of verbs) {
        const targets = protectedPaths().flatMap((p) => spellings(p, host || "h"));
        await Promise.all(
          targets.map(async (target) => {
            const hostHeader = host === "" ? "" : `\r\nHost: ${host}`;
            const length = verb === "PUT" || verb === "POST" ? "\r\nContent-Length: 0" : "";
            const res = await rawRequest(port, `${verb} ${target} HTTP/1.1${hostHeader}${length}`);
            requests++;
            if (res.status === 401 || res.status === 400) return;
            const health = res.headers.get("content-length") === "3" && (verb === "HEAD" || res.body === "ok\n");
            if (res.status === 200 && (verb === "GET" || verb === "HEAD") && health) return;
            leaks.push(`${verb} ${target} (Host: ${host.slice(0, 20)}) -> ${res.status} ${res.body.slice(0, 40).replace(/\n/g, "\\n")}`);
          }),
        );
      }
    }
    expect(requests).toBeGreaterThan(4000);
    expect(leaks).toEqual([]);
    // Nothing was deleted or changed by any of it.
    const after = await fetch(`${ncps.url}/${path.hash}.narinfo`, { headers: bearer(READ_TOKEN) });
    expect(await after.text()).toBe(narinfoText);
  }, 120_000);

  test("the exact open paths answer without a token; their look-alikes do not", async () => {
    for (const target of ["/healthz", "/healthz?probe=1"]) {
      const res = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: a`);
      expect([target, res.status, res.body]).toEqual([target, 200, "ok\n"]);
    }
    for (const target of ["/metrics", "/metrics?x=1"]) {
      const res = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: a`);
      expect([target, res.status]).toEqual([target, 200]);
      expect(res.body).toContain("http_server_requests_total");
    }
    for (const p of ["healthz", "metrics"]) {
      for (const target of [`/${p}/`, `/${p}/x`, `//${p}`, `/${p.toUpperCase()}`, `/upload/${p}`, `/${p}.narinfo`]) {
        const res = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: a`);
        expect([target, res.status]).toEqual([target, 401]);
      }
    }
  });

  test("with the read token every spelling of the narinfo route gets the narinfo, and writes still need the write token", async () => {
    const auth = `\r\nAuthorization: Bearer ${READ_TOKEN}`;
    for (const host of ["a", "127.0.0.1"]) {
      for (const target of [`/${path.hash}.narinfo`, `http://${host}/${path.hash}.narinfo`]) {
        const res = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: ${host}${auth}`);
        expect([target, res.status]).toEqual([target, 200]);
        expect(res.body).toContain(path.storePath);
      }
    }
    const del = await rawRequest(port, `DELETE /${path.hash}.narinfo HTTP/1.1\r\nHost: a${auth}`);
    expect(del.status).toBe(401);
    for (const id of [realisation, buildTrace]) {
      const get = await rawRequest(port, `GET /${realisationPath(id)} HTTP/1.1\r\nHost: a${auth}`);
      expect([id.kind, get.status]).toEqual([id.kind, 200]);
      for (const target of [`/${realisationPath(id)}`, `/upload/${realisationPath(id)}`]) {
        const put = await rawRequest(port, `PUT ${target} HTTP/1.1\r\nHost: a${auth}\r\nContent-Length: 0`);
        expect([target, put.status]).toEqual([target, 401]);
      }
    }
  });

  test("undecodable or missing request parts are a 400 with a one-line reason, never an error page", async () => {
    const cases = [
      `GET /%zz.narinfo HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${READ_TOKEN}`,
      `GET /nar/%zz.nar HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${READ_TOKEN}`,
      `GET /${path.hash}.narinfo HTTP/1.0\r\nAuthorization: Bearer ${READ_TOKEN}`,
    ];
    for (const head of cases) {
      const res = await rawRequest(port, head);
      const firstLine = head.split("\r\n")[0];
      expect([firstLine, res.status < 500]).toEqual([firstLine, true]);
      expect(res.body).not.toContain("<html");
      expect(res.body).not.toContain("node_modules");
      expect(res.body).not.toContain(process.cwd());
      if (res.status === 400) expect(res.body.trim().split("\n")).toHaveLength(1);
    }
  });
});
