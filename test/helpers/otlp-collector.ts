/** A stand-in OpenTelemetry collector: a real gRPC server (grpc-js) speaking the OTLP
 * collector services, with the OTLP protos the old collector exporter package ships (the
 * field numbers of spans and log records have not changed since). It keeps every span and
 * log record it is sent, and the raw bytes of each metrics export (the metrics messages did
 * change since). */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { dirname, join } from "node:path";

const protos = join(dirname(require.resolve("@opentelemetry/exporter-collector-grpc/package.json")), "build", "protos");

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** "" for a root span */
  parentSpanId: string;
  name: string;
  kind: string;
  attributes: Record<string, string | number | boolean>;
}

export interface ReceivedLog {
  severityText: string;
  severityNumber: string;
  body: string;
  attributes: Record<string, string | number | boolean>;
}

export interface Collector {
  /** http://127.0.0.1:port, as --otel-grpc-url takes it (plaintext) */
  url: string;
  spans: ReceivedSpan[];
  logs: ReceivedLog[];
  metricExports: number;
  /** each metrics export's protobuf bytes */
  metricBytes: Buffer[];
  stop(): Promise<void>;
}

type AnyValue = { string_value?: string; int_value?: string; bool_value?: boolean; double_value?: number };

function value(v: AnyValue | undefined): string | number | boolean {
  if (!v) return "";
  if (v.string_value !== undefined) return v.string_value;
  if (v.int_value !== undefined) return Number(v.int_value);
  if (v.bool_value !== undefined) return v.bool_value;
  return v.double_value ?? "";
}

function attributesOf(list: { key: string; value: AnyValue }[] | undefined): Record<string, string | number | boolean> {
  const attributes: Record<string, string | number | boolean> = {};
  for (const a of list ?? []) attributes[a.key] = value(a.value);
  return attributes;
}

export async function startCollector(): Promise<Collector> {
  const load = (file: string) =>
    grpc.loadPackageDefinition(protoLoader.loadSync(file, { includeDirs: [protos], keepCase: true, longs: String, enums: String, defaults: false, oneofs: true })) as any;
  const traceService = load("opentelemetry/proto/collector/trace/v1/trace_service.proto").opentelemetry.proto.collector.trace.v1.TraceService.service;
  const logsService = load("opentelemetry/proto/collector/logs/v1/logs_service.proto").opentelemetry.proto.collector.logs.v1.LogsService.service;
  const collector: Collector = { url: "", spans: [], logs: [], metricExports: 0, metricBytes: [], stop: async () => {} };
  const server = new grpc.Server();
  server.addService(traceService, {
    Export(call: grpc.ServerUnaryCall<any, unknown>, done: grpc.sendUnaryData<unknown>) {
      for (const rs of call.request.resource_spans ?? []) {
        for (const ils of rs.instrumentation_library_spans ?? []) {
          for (const s of ils.spans ?? []) {
            const attributes = attributesOf(s.attributes);
            collector.spans.push({
              traceId: Buffer.from(s.trace_id).toString("hex"),
              spanId: Buffer.from(s.span_id).toString("hex"),
              parentSpanId: Buffer.from(s.parent_span_id ?? []).toString("hex"),
              name: s.name,
              kind: s.kind,
              attributes,
            });
          }
        }
      }
      done(null, {});
    },
  });
  server.addService(logsService, {
    Export(call: grpc.ServerUnaryCall<any, unknown>, done: grpc.sendUnaryData<unknown>) {
      for (const rl of call.request.resource_logs ?? []) {
        for (const ill of rl.instrumentation_library_logs ?? []) {
          for (const l of ill.logs ?? []) {
            collector.logs.push({ severityText: l.severity_text ?? "", severityNumber: l.severity_number ?? "", body: String(value(l.body)), attributes: attributesOf(l.attributes) });
          }
        }
      }
      done(null, {});
    },
  });
  const raw = (b: Buffer) => b;
  const metricsService: grpc.ServiceDefinition = {
    Export: {
      path: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
      requestStream: false,
      responseStream: false,
      requestSerialize: raw,
      requestDeserialize: raw,
      responseSerialize: () => Buffer.alloc(0),
      responseDeserialize: raw,
    },
  };
  server.addService(metricsService, {
    Export(call: grpc.ServerUnaryCall<Buffer, unknown>, done: grpc.sendUnaryData<unknown>) {
      if (call.request.length > 0) {
        collector.metricExports++;
        collector.metricBytes.push(call.request);
      }
      done(null, {});
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  collector.url = `http://127.0.0.1:${port}`;
  collector.stop = () => new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  return collector;
}
