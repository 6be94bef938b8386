/** The OpenTelemetry SDK behind the instruments: one MeterProvider whose readers are the
 * Prometheus exporter (for /metrics) and, with --otel-enabled, an OTLP/gRPC exporter (or
 * stdout without --otel-grpc-url, as the Go ncps does); and with --otel-enabled a tracer
 * provider exporting spans the same way, and the log lines too when a collector is named.
 * OTLP/gRPC runs in a process of its own (otlp-exporter.ts). Each running ncps has its own providers (nothing
 * global but the async context manager, which carries no state of its own). */
import { context, createNoopMeter } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { ConsoleMetricExporter, MeterProvider, PeriodicExportingMetricReader, type IMetricReader } from "@opentelemetry/sdk-metrics";
import { BasicTracerProvider, BatchSpanProcessor, ConsoleSpanExporter } from "@opentelemetry/sdk-trace-base";
import { histogramProducer } from "./histograms.ts";
import { Telemetry } from "./metrics.ts";
import { startOtlpExporter } from "./otlp-exporter.ts";
import { sdkSampler, traceSamplingFromEnv, type TraceSampling } from "./sampling.ts";

export interface TelemetryOptions {
  prometheus: boolean;
  otel: boolean;
  /** collector URL as validated (http:// plaintext, https:// TLS); absent: stdout */
  otelGrpcUrl?: string;
  version: string;
  /** how often metrics are pushed over OTLP, ms */
  exportIntervalMs?: number;
}

export interface TelemetrySetup {
  telemetry: Telemetry;
  /** The Prometheus text of every instrument; null when --prometheus-enabled is off. */
  metricsText: (() => Promise<string>) | null;
  /** With --otel-enabled and a collector: hands one JSON log line to the OTLP export. */
  logLine: ((line: string) => void) | null;
  /** Flush what is pending (spans, a last metrics push) and stop. */
  shutdown(): Promise<void>;
  /** Hears why, each time the OTLP exporter process ends while ncps runs, and when the next
   * one starts (a no-op without one). */
  onExporterEnded(listener: (why: string, restartInMs: number) => void): void;
}

let contextManagerInstalled = false;

/** Spans started while a request runs become its children: AsyncLocalStorage carries the
 * active span across awaits. Installed once per process, the first time tracing is on. */
function installContextManager() {
  if (contextManagerInstalled) return;
  contextManagerInstalled = true;
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
}

export function createTelemetry(opts: TelemetryOptions): TelemetrySetup {
  const resourceAttributes = { "service.name": "ncps", "service.version": opts.version };
  const resource = resourceFromAttributes(resourceAttributes);
  // To a collector over gRPC from a process of its own; without one, to stdout as Go does.
  const otlp = opts.otel && opts.otelGrpcUrl ? startOtlpExporter(opts.otelGrpcUrl, resourceAttributes) : null;
  // The histograms live in `telemetry`, made below once the meter exists.
  let telemetry: Telemetry | null = null;
  const histograms = histogramProducer(() => telemetry?.histograms ?? [], { name: "ncps", version: opts.version });
  const readers: IMetricReader[] = [];
  let prometheus: PrometheusExporter | null = null;
  if (opts.prometheus) {
    // No server of its own: ncps serves /metrics from its route table.
    prometheus = new PrometheusExporter({ preventServerStart: true, withoutScopeInfo: true, withoutTargetInfo: true, metricProducers: [histograms] });
    readers.push(prometheus);
  }
  if (opts.otel) {
    const exporter = otlp?.metricExporter ?? new ConsoleMetricExporter();
    readers.push(new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: opts.exportIntervalMs ?? 60_000, metricProducers: [histograms] }));
  }
  // Without an exporter nothing reads the instruments: the no-op meter keeps the SDK out.
  const meterProvider = readers.length > 0 ? new MeterProvider({ resource, readers }) : null;
  const meter = meterProvider?.getMeter("ncps", opts.version) ?? createNoopMeter();
  let tracerProvider: BasicTracerProvider | null = null;
  let sampling: TraceSampling | undefined;
  if (opts.otel) {
    // Only tracing reads it: without --otel-enabled a stray value stops nothing.
    sampling = traceSamplingFromEnv();
    installContextManager();
    const spans = otlp?.spanProcessor ?? new BatchSpanProcessor(new ConsoleSpanExporter(), { scheduledDelayMillis: 1000 });
    tracerProvider = new BasicTracerProvider({ resource, sampler: sdkSampler(sampling), spanProcessors: [spans] });
  }
  telemetry = new Telemetry(meter, tracerProvider?.getTracer("ncps", opts.version) ?? null, sampling);
  const serializer = new PrometheusSerializer(undefined, false, undefined, true, true);
  const metricsText = prometheus
    ? async () => {
        const { resourceMetrics } = await prometheus!.collect();
        return serializer.serialize(resourceMetrics);
      }
    : null;
  return {
    telemetry,
    metricsText,
    // OTEL_LOGS_EXPORTER=none, the SDKs' standard switch, keeps log lines off OTLP.
    logLine: otlp && process.env.OTEL_LOGS_EXPORTER !== "none" ? (line) => otlp.logLine(line) : null,
    onExporterEnded: (listener) => otlp?.onEnded(listener),
    shutdown: async () => {
      await tracerProvider?.shutdown().catch(() => {});
      await meterProvider?.shutdown().catch(() => {});
      await otlp?.shutdown();
    },
  };
}
