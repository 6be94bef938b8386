/** The OpenTelemetry SDK behind the instruments: one MeterProvider whose readers are the
 * Prometheus exporter (for /metrics) and, with --otel-enabled, an OTLP/gRPC exporter (or
 * stdout without --otel-grpc-url, as the Go ncps does); and with --otel-enabled a tracer
 * provider exporting spans the same way. Each running ncps has its own providers (nothing
 * global but the async context manager, which carries no state of its own). */
import { context, createNoopMeter } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-grpc";
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { ConsoleMetricExporter, MeterProvider, PeriodicExportingMetricReader, type IMetricReader } from "@opentelemetry/sdk-metrics";
import { BasicTracerProvider, BatchSpanProcessor, ConsoleSpanExporter } from "@opentelemetry/sdk-trace-base";
import { histogramProducer } from "./histograms.ts";
import { Telemetry } from "./metrics.ts";

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
  /** Flush what is pending (spans, a last metrics push) and stop. */
  shutdown(): Promise<void>;
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
  const resource = resourceFromAttributes({ "service.name": "ncps", "service.version": opts.version });
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
    const exporter = opts.otelGrpcUrl ? new OTLPMetricExporter({ url: opts.otelGrpcUrl }) : new ConsoleMetricExporter();
    readers.push(new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: opts.exportIntervalMs ?? 60_000, metricProducers: [histograms] }));
  }
  // Without an exporter nothing reads the instruments: the no-op meter keeps the SDK out.
  const meterProvider = readers.length > 0 ? new MeterProvider({ resource, readers }) : null;
  const meter = meterProvider?.getMeter("ncps", opts.version) ?? createNoopMeter();
  let tracerProvider: BasicTracerProvider | null = null;
  if (opts.otel) {
    installContextManager();
    const exporter = opts.otelGrpcUrl ? new OTLPTraceExporter({ url: opts.otelGrpcUrl }) : new ConsoleSpanExporter();
    tracerProvider = new BasicTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: 1000 })] });
  }
  telemetry = new Telemetry(meter, tracerProvider?.getTracer("ncps", opts.version) ?? null);
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
    shutdown: async () => {
      await tracerProvider?.shutdown().catch(() => {});
      await meterProvider?.shutdown().catch(() => {});
    },
  };
}
