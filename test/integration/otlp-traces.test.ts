/** Traces over OTLP/gRPC to a real gRPC collector: one narinfo miss and one NAR miss, each
 * sent with the client's W3C traceparent. Their spans arrive under the client's trace id,
 * nested as the work was (request > narinfo lookup > upstream request; request > NAR download
 * > upstream request and storage commit), and the upstream is handed the trace too. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import { createLogger } from "../../src/telemetry/logger.ts";
import { eventually } from "../helpers/eventually.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { startCollector, type Collector, type ReceivedSpan } from "../helpers/otlp-collector.ts";
import { makeSyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN = "00f067aa0ba902b7";
const CLIENT_SPAN_2 = "00f067aa0ba902b8";

let work: string;
let collector: Collector;
let upstream: ReturnType<typeof Bun.serve>;
let ncps: RunningNcps | null;
let path: SyntheticPath;
const upstreamTraceparents: { path: string; traceparent: string | null }[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-otlp-"));
  const cache = await makeSyntheticCache(join(work, "up"));
  path = await cache.add("traced", { size: 256 * 1024 });
  // an upstream that remembers the traceparent of each request
  upstream = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const p = new URL(req.url).pathname;
      upstreamTraceparents.push({ path: p, traceparent: req.headers.get("traceparent") });
      const file = Bun.file(join(cache.dir, p));
      return (await file.exists()) ? new Response(file) : new Response("not found", { status: 404 });
    },
  });
  collector = await startCollector();
  ncps = await startInProcess(join(work, "ncps"), {
    "cache-upstream-url": [`http://127.0.0.1:${upstream.port}`],
    "cache-upstream-public-key": [cache.publicKey],
    "otel-enabled": true,
    "otel-grpc-url": collector.url,
  }, createLogger("info", {}, () => {})); // lines at info, written nowhere but to the collector
}, 60_000);

afterAll(async () => {
  await ncps?.stop();
  await collector?.stop();
  upstream?.stop(true);
  if (work) await rm(work, { recursive: true, force: true });
});

/** Waits until `names` have all arrived (the batch processor sends about every second). */
function spansNamed(names: string[], deadlineMs = 15_000): Promise<ReceivedSpan[]> {
  return eventually(
    `spans ${names.join(", ")}`,
    () => {
      const mine = collector.spans.filter((s) => s.traceId === TRACE_ID);
      return names.every((n) => mine.some((s) => s.name === n)) && mine;
    },
    { deadlineMs, everyMs: 100, explain: () => `got ${collector.spans.map((s) => s.name).join(", ")}` },
  );
}

test("the spans of a narinfo miss and a NAR miss continue the client's trace, nested as the work was", async () => {
  const narinfo = await fetch(`${ncps!.url}/${path.hash}.narinfo`, { headers: { traceparent: `00-${TRACE_ID}-${CLIENT_SPAN}-01` } });
  expect(narinfo.status).toBe(200);
  await narinfo.text();
  const nar = await fetch(`${ncps!.url}/${path.narinfo.url}`, { headers: { traceparent: `00-${TRACE_ID}-${CLIENT_SPAN_2}-01` } });
  expect(Buffer.from(await nar.arrayBuffer()).equals(Buffer.from(path.file))).toBe(true);
  await ncps!.cache.drain();

  const spans = await spansNamed(["GET", "ncps.narinfo.lookup", "ncps.upstream.request", "ncps.nar.download", "ncps.storage.commit"]);
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const parentOf = (s: ReceivedSpan) => byId.get(s.parentSpanId);

  // the server spans continue the client's spans
  const servers = spans.filter((s) => s.name === "GET");
  expect(servers.map((s) => s.parentSpanId).sort()).toEqual([CLIENT_SPAN, CLIENT_SPAN_2]);
  expect(servers.every((s) => s.kind === "SPAN_KIND_SERVER")).toBe(true);
  const narinfoServer = servers.find((s) => s.parentSpanId === CLIENT_SPAN)!;
  const narServer = servers.find((s) => s.parentSpanId === CLIENT_SPAN_2)!;
  expect(narinfoServer.attributes["http.route"]).toBe("narinfo");
  expect(narinfoServer.attributes["url.path"]).toBe(`/${path.hash}.narinfo`);
  expect(narinfoServer.attributes["client.address"]).toBe("127.0.0.1");
  expect(narinfoServer.attributes["http.response.status_code"]).toBe(200);
  expect(narServer.attributes["http.route"]).toBe("nar");

  // narinfo miss: request > lookup > upstream request
  const lookup = spans.find((s) => s.name === "ncps.narinfo.lookup")!;
  expect(parentOf(lookup)).toBe(narinfoServer);
  const narinfoFetch = spans.find((s) => s.name === "ncps.upstream.request" && String(s.attributes["url.full"]).endsWith(".narinfo"))!;
  expect(parentOf(narinfoFetch)).toBe(lookup);
  expect(narinfoFetch.kind).toBe("SPAN_KIND_CLIENT");

  // NAR miss: request > download > (upstream request, storage commit)
  const download = spans.find((s) => s.name === "ncps.nar.download")!;
  expect(parentOf(download)).toBe(narServer);
  expect(download.attributes["ncps.nar.verified"]).toBe(true);
  const narFetch = spans.find((s) => s.name === "ncps.upstream.request" && String(s.attributes["url.full"]).includes("/nar/"))!;
  expect(parentOf(narFetch)).toBe(download);
  expect(parentOf(spans.find((s) => s.name === "ncps.storage.commit")!)).toBe(download);

  // the upstream was handed the trace, with ncps's upstream-request span as the parent
  const sent = Object.fromEntries(upstreamTraceparents.map((r) => [r.path, r.traceparent]));
  expect(sent[`/${path.hash}.narinfo`]).toBe(`00-${TRACE_ID}-${narinfoFetch.spanId}-01`);
  expect(sent[`/${path.narinfo.url}`]).toBe(`00-${TRACE_ID}-${narFetch.spanId}-01`);
}, 60_000);

test("without a traceparent a request starts a trace of its own", async () => {
  const before = new Set(collector.spans.map((s) => s.spanId));
  expect((await fetch(`${ncps!.url}/nix-cache-info`)).status).toBe(200);
  const fresh = await eventually(
    "a new cache-info span",
    () => collector.spans.find((s) => !before.has(s.spanId) && s.attributes["http.route"] === "cache-info"),
    { deadlineMs: 15_000, everyMs: 100 },
  );
  expect(fresh.parentSpanId).toBe("");
  expect(fresh.traceId).not.toBe(TRACE_ID);
});

test("log lines go out as OTLP log records: the access log of the traced requests, at info", async () => {
  const line = await eventually(
    "the narinfo request's access-log record",
    () => collector.logs.find((l) => l.body === "request" && l.attributes.route === "narinfo" && l.attributes.status === 200),
    { deadlineMs: 15_000, everyMs: 100 },
  );
  expect(line.severityText).toBe("info");
  expect(line.severityNumber).toBe("SEVERITY_NUMBER_INFO");
  expect(line.attributes.method).toBe("GET");
  expect(line.attributes.path).toBe(`/${path.hash}.narinfo`);
  expect(collector.logs.some((l) => l.body === "ncps listening" && typeof l.attributes.publicKey === "string")).toBe(true);
}, 20_000);

test("the same instruments go out over OTLP: a stopping ncps pushes its metrics, histograms included", async () => {
  await ncps!.stop();
  ncps = null;
  expect(collector.metricExports).toBeGreaterThan(0);
  const pushed = Buffer.concat(collector.metricBytes).toString("latin1");
  for (const name of ["http_server_requests", "http_server_request_duration_seconds", "ncps_upstream_nar_fetch_duration_seconds"]) expect(pushed).toContain(name);
});
