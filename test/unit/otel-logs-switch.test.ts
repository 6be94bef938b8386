import { afterEach, expect, test } from "bun:test";
import { createTelemetry } from "../../src/telemetry/otel.ts";

const saved = process.env.OTEL_LOGS_EXPORTER;
afterEach(() => {
  if (saved === undefined) delete process.env.OTEL_LOGS_EXPORTER;
  else process.env.OTEL_LOGS_EXPORTER = saved;
});

test("log lines go to an OTLP collector unless OTEL_LOGS_EXPORTER=none; never without a collector", async () => {
  const url = "http://127.0.0.1:9"; // nothing is sent before a line is written
  delete process.env.OTEL_LOGS_EXPORTER;
  const withLogs = createTelemetry({ prometheus: false, otel: true, otelGrpcUrl: url, version: "test" });
  expect(withLogs.logLine).not.toBeNull();
  process.env.OTEL_LOGS_EXPORTER = "none";
  const without = createTelemetry({ prometheus: false, otel: true, otelGrpcUrl: url, version: "test" });
  expect(without.logLine).toBeNull();
  delete process.env.OTEL_LOGS_EXPORTER;
  const toStdout = createTelemetry({ prometheus: false, otel: true, version: "test" });
  expect(toStdout.logLine).toBeNull();
  await Promise.all([withLogs.shutdown(), without.shutdown(), toStdout.shutdown()]);
});
