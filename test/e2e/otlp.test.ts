/** OTLP from ncps as users run it (the compiled binary in CI, NCPS_BIN): a request carrying
 * a traceparent reaches a real gRPC collector as a span of that trace, its access-log line as
 * a log record, and a stopping ncps pushes its metrics. The exporters run in a process of their
 * own, a second entrypoint of the binary, and need grpc-js bundled where they look for it.
 * When that process dies, ncps loses telemetry, never a request, waits for nothing, and
 * starts another. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider } from "@opentelemetry/sdk-trace-base";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startOtlpExporter } from "../../src/telemetry/otlp-exporter.ts";
import { eventually } from "../helpers/eventually.ts";
import { ncpsCommand, startNcpsProcess, type NcpsProcess } from "../helpers/ncps.ts";
import { startCollector, type Collector } from "../helpers/otlp-collector.ts";
import { startSilentPort } from "../helpers/ports.ts";

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

/** A GET of nix-cache-info from `served` in trace `traceId` (sampled); its status. */
async function traced(served: NcpsProcess, traceId: string): Promise<number> {
  const res = await fetch(`${served.url}/nix-cache-info`, { headers: { traceparent: `00-${traceId}-b7ad6b7169203331-01` } });
  await res.text();
  return res.status;
}

/** A new trace id. */
const newTraceId = () => crypto.randomUUID().replaceAll("-", "");

/** How long telemetry may take to arrive, and what `from` said meanwhile when it does not. */
const arriving = (from = ncps) => ({ deadlineMs: 15_000, everyMs: 100, explain: from ? () => `ncps said:\n${from.logs.slice(-20).join("\n")}` : undefined });

test("a traced request arrives as a span of the client's trace and as an access-log record; a stop pushes the metrics", async () => {
  const res = await fetch(`${ncps!.url}/nix-cache-info`, { headers: { traceparent: `00-${TRACE_ID}-b7ad6b7169203331-01` } });
  expect(res.status).toBe(200);
  await res.text();
  const span = await eventually("the request's span", () => collector.spans.find((s) => s.traceId === TRACE_ID), arriving());
  expect(span.parentSpanId).toBe("b7ad6b7169203331");
  expect(span.attributes["http.route"]).toBe("cache-info");
  const record = await eventually("the access-log record", () => collector.logs.find((l) => l.body === "request" && l.attributes.route === "cache-info"), arriving());
  expect(record.severityText).toBe("info");
  await ncps!.stop();
  ncps = null;
  expect(Buffer.concat(collector.metricBytes).toString("latin1")).toContain("http_server_request_duration_seconds");
}, 60_000);

/** The pids of `pid`'s child processes. */
const childrenOf = (pid: number) => Bun.$`pgrep -P ${pid}`.nothrow().text().then((t) => t.trim().split("\n").filter(Boolean).map(Number));

/** Whether process `pid` is an OTLP exporter. */
const isExporter = (pid: number) =>
  Bun.file(`/proc/${pid}/cmdline`)
    .text()
    .then((cmdline) => cmdline.split("\0").includes("__otlp-exporter"))
    .catch(() => false); // ended in between

/** The exporter process started by process `parent`, once it runs (one other than
 * `except`, an exporter that ended). */
function exporterOf(parent: number, except: number | null = null): Promise<number> {
  return eventually(
    "the exporter process",
    async () => {
      for (const pid of await childrenOf(parent)) if (pid !== except && (await isExporter(pid))) return pid;
    },
    arriving(),
  );
}

test("the exporter is a process of ncps's own, and a killed ncps takes it along", async () => {
  const killed = await startNcpsProcess({ args: ["--otel-enabled", "--otel-grpc-url", collector.url] });
  const exporter = await exporterOf(killed.proc.pid);
  killed.proc.kill("SIGKILL");
  await killed.proc.exited;
  const alive = () => Bun.file(`/proc/${exporter}/stat`).exists();
  await eventually("the exporter ending with ncps", async () => !(await alive()), { deadlineMs: 10_000, everyMs: 100 });
}, 60_000);

test("a killed exporter loses telemetry for a second, never a request: ncps says so, starts another and stops cleanly", async () => {
  const served = await startNcpsProcess({ args: ["--otel-enabled", "--otel-grpc-url", collector.url] });
  try {
    const before = newTraceId();
    expect(await traced(served, before)).toBe(200);
    await eventually("a span from before the kill", () => collector.spans.find((s) => s.traceId === before), arriving(served));
    const exporter = await exporterOf(served.proc.pid);
    process.kill(exporter, "SIGKILL");
    // gone from the process table once ncps has seen it end (and reaped it)
    await eventually("the exporter's end", async () => !(await Bun.file(`/proc/${exporter}/stat`).exists()), arriving(served));

    // requests go on being answered while no exporter runs; their spans are dropped
    const during = newTraceId();
    const statuses: number[] = [];
    for (let round = 0; round < 10; round++) statuses.push(...(await Promise.all(Array.from({ length: 20 }, () => traced(served, during)))));
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect(served.proc.exitCode).toBeNull();

    // a second later another exporter runs, and spans reach the collector again
    const next = await exporterOf(served.proc.pid, exporter);
    const after = newTraceId();
    // asked again until one of them is exported: the new exporter may still be starting
    const throughNext = async () => {
      await traced(served, after);
      return collector.spans.find((s) => s.traceId === after);
    };
    await eventually("a span through the new exporter", throughNext, arriving(served));
    expect(await exporterOf(served.proc.pid)).toBe(next);

    served.proc.kill("SIGTERM");
    expect(await served.proc.exited).toBe(0);
    const records = served.logs.flatMap((line) => {
      try {
        return [JSON.parse(line) as { level?: string; msg?: string }];
      } catch {
        return [{ msg: line }];
      }
    });
    expect(records.at(-1)?.msg).toBe("stopped");
    // one error, naming what ended it and when the next starts; nothing else went wrong
    expect(records.filter((r) => r.level === "error" || r.level === undefined)).toEqual([
      expect.objectContaining({ level: "error", msg: expect.stringContaining("OTLP exporter process ended"), reason: expect.stringContaining("SIGKILL"), restartInMs: 1000 }),
    ]);
  } finally {
    await served.stop();
  }
}, 60_000);

test("a stop signalled to ncps's whole process group, as systemd and Ctrl-C send it, still exports what is pending and reports no loss", async () => {
  // ncps leading a process group of its own, as under systemd (which signals the unit's
  // whole cgroup) or in a terminal (Ctrl-C goes to the foreground group): the exporter gets
  // the signal too
  const work = await mkdtemp(join(tmpdir(), "ncps-otlp-group-"));
  const wrapper = join(work, "ncps-in-own-group");
  await writeFile(wrapper, `#!/bin/sh\nexec setsid ${ncpsCommand().map((a) => `'${a}'`).join(" ")} "$@"\n`, { mode: 0o755 });
  const served = await startNcpsProcess({ command: wrapper, args: ["--otel-enabled", "--otel-grpc-url", collector.url] });
  try {
    const first = newTraceId();
    await traced(served, first);
    await eventually("a span from the running exporter", () => collector.spans.find((s) => s.traceId === first), arriving(served));
    const traceId = newTraceId();
    await traced(served, traceId);
    process.kill(-served.proc.pid, "SIGTERM"); // the group: ncps and its exporter
    expect(await served.proc.exited).toBe(0);
    // the span was still pending in ncps or the exporter: only a stop that flushes sends it
    await eventually("the span pending at the stop", () => collector.spans.find((s) => s.traceId === traceId), arriving(served));
    const errors = served.logs.filter((line) => !line.startsWith("{") || (JSON.parse(line) as { level?: string }).level === "error");
    expect(errors).toEqual([]);
  } finally {
    await served.stop();
    await rm(work, { recursive: true, force: true });
  }
}, 60_000);

test("an export in flight when the exporter dies is answered, as are later ones; the stop does not wait for it", async () => {
  const silent = await startSilentPort(); // a collector that never answers: an export stays in flight
  const otlp = startOtlpExporter(silent.url, { "service.name": "ncps-test" });
  const ends: string[] = [];
  otlp.onEnded((why) => ends.push(why));
  try {
    const metrics = { resource: resourceFromAttributes({}), scopeMetrics: [] };
    const exported = () => new Promise<ExportResult>((resolve) => otlp.metricExporter.export(metrics, resolve));
    const inFlight = exported();
    await eventually("the exporter's connection to the collector", () => silent.accepted() > 0, arriving(null)); // no ncps process to quote
    process.kill(await exporterOf(process.pid), "SIGKILL");
    await eventually("the exporter's end, heard", () => ends.length > 0, arriving(null));
    expect(ends).toEqual([expect.stringContaining("SIGKILL")]);

    const failed = { code: ExportResultCode.FAILED, error: { message: expect.stringContaining("the OTLP exporter process ended") } };
    expect(await inFlight).toMatchObject(failed);
    expect(await exported()).toMatchObject(failed);
    // spans and log lines are dropped without a word
    const tracer = new BasicTracerProvider({ spanProcessors: [otlp.spanProcessor] }).getTracer("test");
    for (let i = 0; i < 1_000; i++) {
      tracer.startSpan("after the exporter died").end();
      otlp.logLine(`{"level":"info","msg":"after the exporter died","i":${i}}\n`);
    }
    await otlp.spanProcessor.forceFlush();
    const stopping = performance.now();
    await otlp.shutdown();
    expect(performance.now() - stopping).toBeLessThan(5_000); // SHUTDOWN_MS: nothing waits for a dead process
    await Bun.sleep(1_500); // past the restart delay: a stopped exporter is not started again
    expect(await childrenOf(process.pid).then((pids) => Promise.all(pids.map(isExporter)))).not.toContain(true);
  } finally {
    await otlp.shutdown();
    await silent.stop();
  }
}, 60_000);

test("an exporter that keeps ending is started again after a delay that doubles up to the longest, and after one that lasted, the first again", async () => {
  const otlp = startOtlpExporter(collector.url, { "service.name": "ncps-test" }, { firstMs: 100, maxMs: 400 });
  const delays: number[] = [];
  otlp.onEnded((_why, restartInMs) => delays.push(restartInMs));
  let previous: number | null = null;
  const nextExporter = () => exporterOf(process.pid, previous);
  const kill = async (pid: number) => {
    const heard = delays.length;
    process.kill(pid, "SIGKILL");
    await eventually("its end, heard", () => delays.length > heard, arriving(null));
    previous = pid;
  };
  try {
    for (let i = 0; i < 4; i++) await kill(await nextExporter());
    expect(delays).toEqual([100, 200, 400, 400]);
    const lasting = await nextExporter();
    await Bun.sleep(500); // it runs longer than the longest delay
    await kill(lasting);
    expect(delays.at(-1)).toBe(100);
  } finally {
    await otlp.shutdown();
  }
}, 60_000);

test("an export that cannot be held while the exporter process starts is answered at once, not left waiting", async () => {
  const otlp = startOtlpExporter(collector.url, { "service.name": "ncps-test" });
  try {
    // all before the process can say it listens (this is one synchronous run): as many
    // messages as may be held meanwhile (1,000), a flushed span each
    const tracer = new BasicTracerProvider({ spanProcessors: [otlp.spanProcessor] }).getTracer("test");
    for (let i = 0; i < 1_000; i++) {
      tracer.startSpan("while the exporter starts").end();
      void otlp.spanProcessor.forceFlush();
    }
    const metrics = { resource: resourceFromAttributes({}), scopeMetrics: [] };
    const answered = new Promise<ExportResult>((resolve) => otlp.metricExporter.export(metrics, resolve));
    const result = await Promise.race([answered, Bun.sleep(5_000).then(() => "unanswered after 5 s")]);
    expect(result).toMatchObject({ code: ExportResultCode.FAILED, error: { message: expect.stringContaining("dropped") } });
  } finally {
    await otlp.shutdown();
  }
}, 60_000);
