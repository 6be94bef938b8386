/** OTLP from ncps as users run it (the compiled binary in CI, NCPS_BIN): a request carrying
 * a traceparent reaches a real gRPC collector as a span of that trace, its access-log line as
 * a log record, and a stopping ncps pushes its metrics. The exporters run on a thread of their
 * own, a second entrypoint of the binary, and need grpc-js bundled where they look for it. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { startNcpsProcess, type NcpsProcess } from "../helpers/ncps.ts";
import { startCollector, type Collector } from "../helpers/otlp-collector.ts";

const TRACE_ID = "0af7651916cd43dd8448eb211c80319c";

let collector: Collector;
let ncps: NcpsProcess | null = null;

beforeAll(async () => {
  collector = await startCollector();
  ncps = await startNcpsProcess({ args: ["--otel-enabled", "--otel-grpc-url", collector.url] });
}, 60_000);

afterAll(async () => {
  await ncps?.stop();
  await collector?.stop();
});

async function until<T>(find: () => T | undefined | Promise<T | undefined>, what: string, deadlineMs = 15_000): Promise<T> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const found = await find();
    if (found !== undefined) return found;
    if (Date.now() > end) throw new Error(`${what} did not arrive; ncps said:\n${ncps?.logs.slice(-20).join("\n")}`);
    await Bun.sleep(100);
  }
}

test("a traced request arrives as a span of the client's trace and as an access-log record; a stop pushes the metrics", async () => {
  const res = await fetch(`${ncps!.url}/nix-cache-info`, { headers: { traceparent: `00-${TRACE_ID}-b7ad6b7169203331-01` } });
  expect(res.status).toBe(200);
  await res.text();
  const span = await until(() => collector.spans.find((s) => s.traceId === TRACE_ID), "the request's span");
  expect(span.parentSpanId).toBe("b7ad6b7169203331");
  expect(span.attributes["http.route"]).toBe("cache-info");
  const record = await until(() => collector.logs.find((l) => l.body === "request" && l.attributes.route === "cache-info"), "the access-log record");
  expect(record.severityText).toBe("info");
  await ncps!.stop();
  ncps = null;
  expect(Buffer.concat(collector.metricBytes).toString("latin1")).toContain("http_server_request_duration_seconds");
}, 60_000);

test("the exporter is a process of ncps's own, and a killed ncps takes it along", async () => {
  const killed = await startNcpsProcess({ args: ["--otel-enabled", "--otel-grpc-url", collector.url] });
  const children = () => Bun.$`pgrep -P ${killed.proc.pid}`.nothrow().text().then((t) => t.trim().split("\n").filter(Boolean).map(Number));
  const [exporter] = await until(async () => ((await children()).length === 1 ? await children() : undefined), "the exporter process");
  expect((await Bun.file(`/proc/${exporter}/cmdline`).text()).split("\0")).toContain("__otlp-exporter");
  killed.proc.kill("SIGKILL");
  await killed.proc.exited;
  const alive = () => Bun.file(`/proc/${exporter}/stat`).exists();
  const end = Date.now() + 10_000;
  while ((await alive()) && Date.now() < end) await Bun.sleep(100);
  expect(await alive()).toBe(false);
}, 60_000);
