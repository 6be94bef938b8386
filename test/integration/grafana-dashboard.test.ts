/** nix/grafana-dashboard.json is built only from what ncps exports: after a little of every
 * kind of traffic (misses, hits, a NAR that fails verification, a remembered 404, a delete),
 * every metric any of its queries names is in /metrics. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import { scrape } from "../helpers/metrics.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { makeSyntheticCache } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const dashboard = await Bun.file(join(import.meta.dir, "..", "..", "nix", "grafana-dashboard.json")).json();

/** Every `expr` anywhere in the dashboard. */
function queries(node: unknown): string[] {
  if (Array.isArray(node)) return node.flatMap(queries);
  if (node === null || typeof node !== "object") return [];
  return Object.entries(node).flatMap(([k, v]) => (k === "expr" && typeof v === "string" ? [v] : queries(v)));
}

let work: string;
let upstream: Upstream;
let ncps: RunningNcps;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-dashboard-"));
  const cache = await makeSyntheticCache(join(work, "up"));
  const good = await cache.add("good");
  const bad = await cache.add("bad");
  upstream = await startUpstream(cache.dir);
  upstream.fault(`/${bad.narinfo.url}`, { kind: "corrupt" });
  ncps = await startInProcess(join(work, "ncps"), {
    "cache-upstream-url": [upstream.url],
    "cache-upstream-public-key": [cache.publicKey],
    "cache-upstream-negative-ttl": "1m",
    "cache-allow-delete-verb": true,
    "prometheus-enabled": true,
  });
  const get = async (path: string, init?: RequestInit) => {
    // a NAR that fails verification ends in a broken connection
    const res = await fetch(`${ncps.url}${path}`, init).catch(() => null);
    await res?.arrayBuffer().catch(() => {});
    return res?.status ?? 0;
  };
  for (const p of [good, bad]) {
    expect(await get(`/${p.hash}.narinfo`)).toBe(200); // miss
    expect(await get(`/${p.hash}.narinfo`)).toBe(200); // hit
    await get(`/${p.narinfo.url}`);
  }
  expect(await get(`/${good.narinfo.url}`)).toBe(200); // a stored NAR
  const absent = "0".repeat(32);
  expect(await get(`/${absent}.narinfo`)).toBe(404);
  expect(await get(`/${absent}.narinfo`)).toBe(404); // the remembered 404
  expect(await get(`/${good.hash}.narinfo`, { method: "DELETE" })).toBe(204);
  await ncps.cache.drain();
}, 60_000);

afterAll(async () => {
  await ncps?.stop();
  await upstream?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test("the dashboard is one Grafana dashboard with a Prometheus data source variable", () => {
  expect(dashboard.uid).toBe("ncps-overview");
  expect(dashboard.templating.list.map((v: { type: string }) => v.type)).toContain("datasource");
  expect(queries(dashboard).length).toBeGreaterThan(20);
});

test("every metric the dashboard queries is exported", async () => {
  const exported = (await scrape(ncps.url)).names;
  const queried = new Set(queries(dashboard).flatMap((q) => [...q.matchAll(/\b(?:ncps|http_server)_[a-z0-9_]+/g)].map((m) => m[0])));
  // a histogram's series are <name>_bucket, _sum and _count
  const missing = [...queried].filter((name) => !exported.has(name) && !exported.has(name.replace(/_(bucket|sum|count)$/, "")));
  expect(missing).toEqual([]);
  expect(queried.size).toBeGreaterThan(20);
});
