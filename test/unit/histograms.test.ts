import { expect, test } from "bun:test";
import { createTelemetry } from "../../src/telemetry/otel.ts";

test("request durations land in their buckets, cumulative, with sum and count, in the Prometheus text", async () => {
  const { telemetry, metricsText, shutdown } = createTelemetry({ prometheus: true, otel: false, version: "test" });
  try {
    // 0.001 is a bucket boundary: Prometheus buckets are "less than or equal"
    for (const seconds of [0.0004, 0.001, 0.003, 400]) telemetry.requestFinished("narinfo", "GET", 200, seconds, 10);
    telemetry.requestFinished("nar", "GET", 404, 0.02, 0);
    const text = await metricsText!();
    const series = (le: string, route = "narinfo", status = 200) =>
      new RegExp(`^http_server_request_duration_seconds_bucket\\{[^}]*http_route="${route}"[^}]*http_response_status_code="${status}"[^}]*le="${le.replace("+", "\\+")}"\\} (\\S+)$`, "m").exec(text)?.[1];
    expect(series("0.0005")).toBe("1");
    expect(series("0.001")).toBe("2");
    expect(series("0.0025")).toBe("2");
    expect(series("0.005")).toBe("3");
    expect(series("300")).toBe("3");
    expect(series("+Inf")).toBe("4");
    expect(series("0.01", "nar", 404)).toBe("0");
    expect(series("0.025", "nar", 404)).toBe("1");
    expect(/^http_server_request_duration_seconds_count\{[^}]*http_route="narinfo"[^}]*\} 4$/m.test(text)).toBe(true);
    const sum = /^http_server_request_duration_seconds_sum\{[^}]*http_route="narinfo"[^}]*\} (\S+)$/m.exec(text)?.[1];
    expect(Number(sum)).toBeCloseTo(400.0044, 6);
    expect(text).toContain("# TYPE http_server_request_duration_seconds histogram");
  } finally {
    await shutdown();
  }
});
