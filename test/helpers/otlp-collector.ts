/** A stand-in OpenTelemetry collector: a real gRPC server (grpc-js) speaking the OTLP
 * collector services, with the OTLP protos the old collector exporter package ships (the
 * field numbers of spans have not changed since). It keeps every span it is sent, and counts
 * metric exports (taken as raw bytes: the metrics messages did change since). */
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

export interface Collector {
  /** http://127.0.0.1:port, as --otel-grpc-url takes it (plaintext) */
  url: string;
  spans: ReceivedSpan[];
  metricExports: number;
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

export async function startCollector(): Promise<Collector> {
  const definition = protoLoader.loadSync("opentelemetry/proto/collector/trace/v1/trace_service.proto", {
    includeDirs: [protos],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    oneofs: true,
  });
  const traceService = (grpc.loadPackageDefinition(definition) as any).opentelemetry.proto.collector.trace.v1.TraceService.service;
  const collector: Collector = { url: "", spans: [], metricExports: 0, stop: async () => {} };
  const server = new grpc.Server();
  server.addService(traceService, {
    Export(call: grpc.ServerUnaryCall<any, unknown>, done: grpc.sendUnaryData<unknown>) {
      for (const rs of call.request.resource_spans ?? []) {
        for (const ils of rs.instrumentation_library_spans ?? []) {
          for (const s of ils.spans ?? []) {
            const attributes: ReceivedSpan["attributes"] = {};
            for (const a of s.attributes ?? []) attributes[a.key] = value(a.value);
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
      if (call.request.length > 0) collector.metricExports++;
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
