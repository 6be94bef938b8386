/** Head sampling end to end (telemetry/sampling.ts), against a real gRPC collector: with
 * OTEL_TRACES_SAMPLER=parentbased_traceidratio at ratio 0, requests without a traceparent
 * send no span at all, while a caller's sampled trace is still followed, misses included,
 * and an unsampled one is not. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import { createLogger } from "../../src/telemetry/logger.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { startCollector, type Collector } from "../helpers/otlp-collector.ts";
import { makeSyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";

const SAMPLED_TRACE = "5bf92f3577b34da6a3ce929d0e0e4736";
const UNSAMPLED_TRACE = "6bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN = "00f067aa0ba902b7";

let work: string;
let collector: Collector;
let upstream: ReturnType<typeof Bun.serve>;
let ncps: RunningNcps | null = null;
let traced: SyntheticPath;
let untraced: SyntheticPath;
const savedEnv = { sampler: process.env.OTEL_TRACES_SAMPLER, arg: process.env.OTEL_TRACES_SAMPLER_ARG };

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-otlp-sampling-"));
  const cache = await makeSyntheticCache(join(work, "up"));
  traced = await cache.add("traced", { size: 64 * 1024 });
  untraced = await cache.add("untraced", { size: 64 * 1024 });
  upstream = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const file = Bun.file(join(cache.dir, new URL(req.url).pathname));
      return (await file.exists()) ? new Response(file) : new Response("not found", { status: 404 });
    },
  });
  collector = await startCollector();
  process.env.OTEL_TRACES_SAMPLER = "parentbased_traceidratio";
  process.env.OTEL_TRACES_SAMPLER_ARG = "0";
  ncps = await startInProcess(join(work, "ncps"), {
    "cache-upstream-url": [`http://127.0.0.1:${upstream.port}`],
    "cache-upstream-public-key": [cache.publicKey],
    "otel-enabled": true,
    "otel-grpc-url": collector.url,
  }, createLogger("error", {}, () => {}));
}, 60_000);

afterAll(async () => {
  for (const [name, value] of [["OTEL_TRACES_SAMPLER", savedEnv.sampler], ["OTEL_TRACES_SAMPLER_ARG", savedEnv.arg]] as const) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  await ncps?.stop();
  await collector?.stop();
  upstream?.stop(true);
  if (work) await rm(work, { recursive: true, force: true });
});

test("at ratio 0 only the caller's sampled trace is recorded, its miss's spans included", async () => {
  const get = async (path: string, traceparent?: string) => {
    const res = await fetch(`${ncps!.url}/${path}`, traceparent ? { headers: { traceparent } } : {});
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  };
  // a miss and hits without a traceparent, a miss under an unsampled one, a miss under a sampled one
  await get(`${untraced.hash}.narinfo`);
  for (let i = 0; i < 20; i++) await get(`${untraced.hash}.narinfo`);
  await get("nix-cache-info");
  await get(untraced.narinfo.url, `00-${UNSAMPLED_TRACE}-${PARENT_SPAN}-00`);
  await get(`${traced.hash}.narinfo`, `00-${SAMPLED_TRACE}-${PARENT_SPAN}-01`);
  await ncps!.cache.drain();
  await ncps!.stop(); // flushes every span still batched
  ncps = null;

  const traces = new Set(collector.spans.map((s) => s.traceId));
  expect([...traces]).toEqual([SAMPLED_TRACE]);
  expect(collector.spans.map((s) => s.name).sort()).toEqual(["GET", "ncps.narinfo.lookup", "ncps.upstream.request"]);
}, 60_000);
