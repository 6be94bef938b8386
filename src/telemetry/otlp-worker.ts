/** The OTLP export thread (see otlp-thread.ts): turns the messages of the main thread back
 * into what the SDK's OTLP/gRPC exporters take, and sends them. Log lines are the logger's
 * JSON lines; they go out in batches, at most one export in flight. */
import * as grpc from "@grpc/grpc-js";
import type { Attributes } from "@opentelemetry/api";
import { ExportResultCode, millisToHrTime, TraceState, type ExportResult } from "@opentelemetry/core";
import { OTLPLogExporter } from "@opentelemetry/exporter-logs-otlp-grpc";
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-grpc";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { resourceFromAttributes, type Resource } from "@opentelemetry/resources";
import type { ReadableLogRecord } from "@opentelemetry/sdk-logs";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import type { FromOtlpThread, SpanMessage, ToOtlpThread } from "./otlp-thread.ts";

declare const self: Worker;

/** Log records waiting beyond this many are dropped (and counted): a collector that is down
 * must not grow this thread without bound. */
const MAX_PENDING_LOGS = 20_000;
const LOG_BATCH = 1_000;
const LOG_INTERVAL_MS = 1_000;

const decoder = new TextDecoder();
const severity: Record<string, number> = { debug: 5, info: 9, warn: 13, error: 17 };

let exporters: { traces: OTLPTraceExporter; metrics: OTLPMetricExporter; logs: OTLPLogExporter; resource: Resource } | null = null;
const logScope = { name: "ncps" };
let logs: ReadableLogRecord[] = [];
let droppedLogs = 0;
let logExport: Promise<void> | null = null;

const reply = (message: FromOtlpThread) => self.postMessage(message);

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

/** Sends what is waiting, one export at a time. */
function sendLogs(): Promise<void> {
  if (logExport || !exporters || logs.length === 0) return logExport ?? Promise.resolve();
  const batch = logs.splice(0, LOG_BATCH);
  const { logs: exporter } = exporters;
  logExport = exported(exporter, batch).then(() => {
    logExport = null;
    if (logs.length >= LOG_BATCH) return sendLogs();
  });
  return logExport;
}

setInterval(() => void sendLogs(), LOG_INTERVAL_MS);

self.onmessage = async (event: MessageEvent<ToOtlpThread>) => {
  const m = event.data;
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
      reply({ type: "done", id: m.id, error: await exported(exporters.traces, m.spans.map((s) => readableSpan(s, resource))) });
      break;
    case "metrics":
      reply({ type: "done", id: m.id, error: await exported(exporters.metrics, { resource, scopeMetrics: m.scopeMetrics }) });
      break;
    case "logs":
      for (const line of decoder.decode(m.lines).split("\n")) {
        if (line === "") continue;
        if (logs.length >= MAX_PENDING_LOGS) {
          droppedLogs++;
          continue;
        }
        const record = logRecord(line, resource);
        if (record) logs.push(record);
      }
      if (logs.length >= LOG_BATCH) void sendLogs();
      break;
    case "shutdown":
      if (droppedLogs > 0) {
        const note = logRecord(JSON.stringify({ time: new Date().toISOString(), level: "warn", msg: "log records dropped: the collector did not keep up", dropped: droppedLogs }), resource);
        if (note) logs.push(note);
      }
      while (logs.length > 0 || logExport) await sendLogs();
      await Promise.all([exporters.traces.shutdown(), exporters.metrics.shutdown(), exporters.logs.shutdown()]).catch(() => {});
      reply({ type: "done", id: m.id });
      break;
  }
};
