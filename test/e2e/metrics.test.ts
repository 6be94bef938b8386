/** /metrics tells what happened: the real Nix client substitutes a closure through ncps twice
 * (fresh stores, fresh narinfo disk caches), and the counters, read by a real Prometheus
 * text-format parser, match the misses, the hits and the bytes. Runs against the compiled
 * binary in CI (NCPS_BIN). */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { scrape, type Scrape } from "../helpers/metrics.ts";
import { startNcpsProcess, type NcpsProcess } from "../helpers/ncps.ts";
import { buildClosure, createNixEnv, makeKeyPair, nixAvailable, publishCache, storePathHash, substitute, verifyStore, type NixEnv } from "../helpers/nix.ts";
import { describeIf, testIf } from "../helpers/prereq.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const test = testIf(nixAvailable, "the real Nix (nix-bin) is needed for end-to-end tests");
const T = 300_000;

/** Scrapes until `ready` holds (a download's figures land just after its last byte is sent),
 * or fails at the deadline. */
async function scrapeUntil(url: string, ready: (m: Scrape) => boolean, deadlineMs = 20_000): Promise<Scrape> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const m = await scrape(url);
    if (ready(m) || Date.now() > until) return m;
    await Bun.sleep(100);
  }
}

describeIf(nixAvailable)("metrics: a real Nix client's substitutions, counted", () => {
  let nix: NixEnv;
  let work: string;
  let paths: string[];
  let upstream: Upstream;
  let ncps: NcpsProcess;
  let narBytes = 0;

  beforeAll(async () => {
    nix = await createNixEnv();
    work = await mkdtemp(join(tmpdir(), "ncps-metrics-"));
    const key = await makeKeyPair(nix, "metrics-upstream-1");
    const store = nix.store("upstream");
    ({ paths } = await buildClosure(nix, store, { count: 4, bigBytes: 3 * 1024 * 1024, seed: `metrics-${Date.now()}` }));
    await publishCache(nix, store, paths, join(work, "up"), { compression: "zstd", key });
    for (const p of paths) {
      const narinfo = await Bun.file(join(work, "up", `${storePathHash(p)}.narinfo`)).text();
      narBytes += Number(/^FileSize: (\d+)$/m.exec(narinfo)![1]);
    }
    upstream = await startUpstream(join(work, "up"));
    ncps = await startNcpsProcess({
      dataDir: join(work, "ncps"),
      args: ["--cache-upstream-url", upstream.url, "--cache-upstream-public-key", key.publicKey, "--prometheus-enabled"],
    });
  }, T);

  afterAll(async () => {
    await ncps?.stop();
    await upstream?.stop();
    await nix?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test("misses, then hits, then the bytes: each counter says what the client and the upstream saw", async () => {
    const n = paths.length;
    const before = await scrape(ncps.url);
    expect(before.value("ncps_narinfo_served_total")).toBe(0);
    expect(before.value("ncps_upstream_count_total")).toBe(1);
    // Go's gauges of what is stored, there from the start (a count of rows, refreshed every 30 s)
    expect(before.names.has("ncps_narinfo_count") && before.names.has("ncps_nar_file_count")).toBe(true);
    expect(before.value("ncps_narinfo_count") + before.value("ncps_nar_file_count")).toBe(0);

    const cold = nix.store("client-cold");
    expect((await substitute(nix, { from: ncps.url, paths: [paths.at(-1)!], trustedKeys: [ncps.publicKey], store: cold })).code).toBe(0);
    await verifyStore(nix, cold, paths, [ncps.publicKey]);
    const afterMisses = await scrapeUntil(ncps.url, (m) => m.value("ncps_upstream_bytes_fetched_total") >= narBytes && m.value("ncps_downloads_in_flight") === 0);
    const upstreamNarinfos = paths.reduce((sum, p) => sum + upstream.hits(`/${storePathHash(p)}.narinfo`), 0);
    expect(upstreamNarinfos).toBe(n);
    expect(afterMisses.value("ncps_narinfo_served_total", { result: "miss", status: "success" })).toBe(upstreamNarinfos);
    // Nix asks for a narinfo more than once in one run (GET, and HEAD to see if it exists): the
    // repeats are hits; every answer is one or the other
    const narinfoAnswers = (s: Scrape) => s.value("http_server_requests_total", { http_route: "narinfo", http_response_status_code: "200" });
    expect(afterMisses.value("ncps_narinfo_served_total", { status: "success" })).toBe(narinfoAnswers(afterMisses));
    expect(afterMisses.value("ncps_nar_served_total", { result: "miss", status: "success" })).toBe(upstream.hits("/nar/"));
    expect(afterMisses.value("ncps_nar_served_total", { result: "hit" })).toBe(0);
    expect(afterMisses.value("ncps_upstream_bytes_fetched_total")).toBe(narBytes);
    expect(afterMisses.value("ncps_upstream_nar_fetch_duration_seconds", { result: "verified" })).toBe(n);
    expect(afterMisses.value("ncps_upstream_narinfo_fetch_duration_seconds", { result: "found" })).toBe(n);

    const warm = nix.store("client-warm");
    expect((await substitute(nix, { from: ncps.url, paths: [paths.at(-1)!], trustedKeys: [ncps.publicKey], store: warm })).code).toBe(0);
    await verifyStore(nix, warm, paths, [ncps.publicKey]);
    const m = await scrapeUntil(ncps.url, (s) => s.value("ncps_store_total_size_bytes") === narBytes);

    // the second client was served from ncps alone
    expect(upstream.hits("/nar/")).toBe(n);
    const warmHits = m.value("ncps_narinfo_served_total", { result: "hit" }) - afterMisses.value("ncps_narinfo_served_total", { result: "hit" });
    expect(warmHits).toBe(narinfoAnswers(m) - narinfoAnswers(afterMisses));
    expect(warmHits).toBeGreaterThanOrEqual(n);
    expect(m.value("ncps_nar_served_total", { result: "hit", status: "success" })).toBe(n);
    expect(m.value("ncps_narinfo_served_total", { result: "miss" })).toBe(n);
    // every request counted once under its route, with the bytes each NAR answer carried
    expect(m.value("http_server_requests_total", { http_route: "nar", http_request_method: "GET", http_response_status_code: "200" })).toBe(2 * n);
    expect(m.value("http_server_request_duration_seconds", { http_route: "nar" })).toBe(2 * n);
    expect(m.value("ncps_bytes_served_total", { http_route: "nar" })).toBe(2 * narBytes);
    // bandwidth saved is one expression: served minus fetched
    expect(m.value("ncps_bytes_served_total", { http_route: "nar" }) - m.value("ncps_upstream_bytes_fetched_total")).toBe(narBytes);
    expect(m.value("ncps_store_total_size_bytes")).toBe(narBytes);
    expect(m.value("ncps_upstream_count_healthy")).toBe(1);
    expect(m.value("ncps_downloads_in_flight")).toBe(0);
    expect(m.value("ncps_nar_verification_failures_total")).toBe(0);
    expect(m.value("ncps_lock_acquisitions_total", { type: "download", result: "success" })).toBe(n);
  }, T);
});
