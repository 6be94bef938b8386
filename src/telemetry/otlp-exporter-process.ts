/** The OTLP exporter process, `ncps __otlp-exporter` (see otlp-exporter.ts): turns ncps's
 * messages back into what the SDK's OTLP/gRPC exporters take, and sends them. Log lines are the logger's
 * JSON lines, spans one JSON line each; both go out in batches, at most one export of each
 * in flight, and wait in a bounded queue while the collector is slow or away. */
import * as grpc from "@grpc/grpc-js";
import type { Attributes } from "@opentelemetry/api";
import { ExportResultCode, millisToHrTime, TraceState, type ExportResult } from "@opentelemetry/core";
import { OTLPLogExporter } from "@opentelemetry/exporter-logs-otlp-grpc";
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-grpc";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { resourceFromAttributes, type Resource } from "@opentelemetry/resources";
import type { ReadableLogRecord } from "@opentelemetry/sdk-logs";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import type { FromOtlpExporter, SpanMessage, ToOtlpExporter } from "./otlp-exporter.ts";

/** Records waiting beyond this many are dropped (and counted): a collector that is down
 * must not grow this process without bound. */
const MAX_PENDING = 20_000;
const BATCH = 1_000;
const EXPORT_INTERVAL_MS = 1_000;

const decoder = new TextDecoder();
const severity: Record<string, number> = { debug: 5, info: 9, warn: 13, error: 17 };

let exporters: { traces: OTLPTraceExporter; metrics: OTLPMetricExporter; logs: OTLPLogExporter; resource: Resource } | null = null;
const logScope = { name: "ncps" };

const reply = (message: FromOtlpExporter) => process.send!(message);

function exported(exporter: { export(items: never, cb: (r: ExportResult) => void): void }, items: unknown): Promise<string | undefined> {
  return new Promise((resolve) =>
    exporter.export(items as never, (r) => resolve(r.code === ExportResultCode.SUCCESS ? undefined : String(r.error?.message ?? "export failed"))),
  );
}

function readableSpan(m: SpanMessage, resource: Resource): ReadableSpan {
  const context = { traceId: m.traceId, spanId: m.spanId, traceFlags: m.traceFlags, traceState: m.traceState ? new TraceState(m.traceState) : undefined };
  const durationMs = (m.endTime[0] - m.startTime[0]) * 1000 + (m.endTime[1] - m.startTime[1]) / 1e6;
  return {
    name: m.name,
    kind: m.kind,
    spanContext: () => context,
    parentSpanContext: m.parentSpanId ? { traceId: m.traceId, spanId: m.parentSpanId, traceFlags: m.traceFlags, isRemote: m.parentIsRemote } : undefined,
    startTime: m.startTime,
    endTime: m.endTime,
    duration: millisToHrTime(durationMs),
    status: m.status,
    attributes: m.attributes,
    links: [],
    events: m.events,
    ended: true,
    resource,
    instrumentationScope: m.scope,
    droppedAttributesCount: 0,
    droppedEventsCount: 0,
    droppedLinksCount: 0,
  };
}

/** A log line as an OTLP record: its time, level and message become the record's own
 * fields, the rest attributes (objects as JSON text). */
function logRecord(line: string, resource: Resource): ReadableLogRecord | null {
  let fields: Record<string, unknown>;
  try {
    fields = JSON.parse(line);
  } catch {
    return null;
  }
  const { time, level, msg, ...rest } = fields;
  const attributes: Attributes = {};
  for (const key in rest) {
    const v = rest[key];
    attributes[key] = typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? v : JSON.stringify(v);
  }
  const at = millisToHrTime(typeof time === "string" ? Date.parse(time) : Date.now());
  return {
    hrTime: at,
    hrTimeObserved: at,
    severityNumber: severity[String(level)] ?? 0,
    severityText: String(level ?? ""),
    body: String(msg ?? ""),
    attributes,
    resource,
    instrumentationScope: logScope,
    droppedAttributesCount: 0,
  } as ReadableLogRecord;
}

/** Records waiting for their exporter: sent in batches, one export at a time. */
class ExportQueue<T> {
  private waiting: T[] = [];
  private sending: Promise<void> | null = null;
  dropped = 0;

  constructor(private readonly exporter: () => { export(items: never, cb: (r: ExportResult) => void): void } | undefined) {}

  add(item: T) {
    if (this.waiting.length >= MAX_PENDING) this.dropped++;
    else this.waiting.push(item);
    if (this.waiting.length >= BATCH) void this.send();
  }

  /** Sends a batch, and the next while a full one waits. */
  send(): Promise<void> {
    const exporter = this.exporter();
    if (this.sending || !exporter || this.waiting.length === 0) return this.sending ?? Promise.resolve();
    const batch = this.waiting.splice(0, BATCH);
    this.sending = exported(exporter, batch).then(() => {
      this.sending = null;
      if (this.waiting.length >= BATCH) return this.send();
    });
    return this.sending;
  }

  async drain() {
    while (this.waiting.length > 0 || this.sending) await this.send();
  }
}

const logs = new ExportQueue<ReadableLogRecord>(() => exporters?.logs);
const spans = new ExportQueue<ReadableSpan>(() => exporters?.traces);
setInterval(() => {
  void logs.send();
  void spans.send();
}, EXPORT_INTERVAL_MS);

/** Each line of a message's text. */
function* linesOf(bytes: Uint8Array): Generator<string> {
  for (const line of decoder.decode(bytes).split("\n")) if (line !== "") yield line;
}

/** The exporter process's work: messages from ncps over IPC. It ends when ncps does (the IPC
 * channel closes), and says when it listens: ncps holds its messages until then. */
if (!process.send) {
  console.error(`ncps ${process.argv[2]}: started by ncps itself (the OTLP exporter), not by hand`);
  process.exit(2);
}
process.on("disconnect", () => process.exit(0));
// A killed ncps closes no channel in Bun: orphaned (another parent), the exporter ends too.
const parent = process.ppid;
setInterval(() => process.ppid !== parent && process.exit(0), 1_000).unref();
process.on("message", (m: ToOtlpExporter) => void handle(m));
process.send!({ type: "ready" } satisfies FromOtlpExporter);

async function handle(m: ToOtlpExporter) {
  if (m.type === "init") {
    // Credentials and metadata made here: the exporters would otherwise require() grpc-js at
    // run time, which a compiled binary cannot resolve (nothing sent, every export failing).
    const connection = () => ({
      url: m.url,
      credentials: m.url.startsWith("https:") ? grpc.credentials.createSsl() : grpc.credentials.createInsecure(),
      metadata: new grpc.Metadata(),
    });
    exporters = {
      traces: new OTLPTraceExporter(connection()),
      metrics: new OTLPMetricExporter(connection()),
      logs: new OTLPLogExporter(connection()),
      resource: resourceFromAttributes(m.resource),
    };
    return;
  }
  if (!exporters) return;
  const { resource } = exporters;
  switch (m.type) {
    case "spans":
      for (const line of linesOf(m.lines)) spans.add(readableSpan(JSON.parse(line) as SpanMessage, resource));
      break;
    case "metrics":
      reply({ type: "done", id: m.id, error: await exported(exporters.metrics, { resource, scopeMetrics: m.scopeMetrics }) });
      break;
    case "logs":
      for (const line of linesOf(m.lines)) {
        const record = logRecord(line, resource);
        if (record) logs.add(record);
      }
      break;
    case "shutdown":
      for (const [what, queue] of [["log records", logs], ["spans", spans]] as const) {
        if (queue.dropped === 0) continue;
        const note = logRecord(JSON.stringify({ time: new Date().toISOString(), level: "warn", msg: `${what} dropped: the collector did not keep up`, dropped: queue.dropped }), resource);
        if (note) logs.add(note);
      }
      await Promise.all([spans.drain(), logs.drain()]);
      await Promise.all([exporters.traces.shutdown(), exporters.metrics.shutdown(), exporters.logs.shutdown()]).catch(() => {});
      reply({ type: "done", id: m.id });
      break;
  }
}
