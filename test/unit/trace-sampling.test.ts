/** The head sampling decision (telemetry/sampling.ts): the standard variables as the SDKs
 * read them, a caller's traceparent followed where the sampler says so, roots at the ratio. */
import { expect, test } from "bun:test";
import { sampleRequest, sampleRoot, traceSamplingFromEnv } from "../../src/telemetry/sampling.ts";

const PARENT = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";

test("the default follows the parent and records every root", () => {
  const s = traceSamplingFromEnv({});
  expect(s).toEqual({ rootRatio: 1, followParent: true });
  expect(sampleRequest(s, null)).toBe(true);
  expect(sampleRequest(s, `00-${PARENT}-00`)).toBe(false);
  expect(sampleRequest(s, `00-${PARENT}-01`)).toBe(true);
});

test("each named sampler means what it means in the SDKs", () => {
  expect(traceSamplingFromEnv({ OTEL_TRACES_SAMPLER: "always_on" })).toEqual({ rootRatio: 1, followParent: false });
  expect(traceSamplingFromEnv({ OTEL_TRACES_SAMPLER: "always_off" })).toEqual({ rootRatio: 0, followParent: false });
  expect(traceSamplingFromEnv({ OTEL_TRACES_SAMPLER: "parentbased_always_off" })).toEqual({ rootRatio: 0, followParent: true });
  expect(traceSamplingFromEnv({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.25" })).toEqual({ rootRatio: 0.25, followParent: false });
  expect(traceSamplingFromEnv({ OTEL_TRACES_SAMPLER: "parentbased_traceidratio" })).toEqual({ rootRatio: 1, followParent: true });
});

test("a sampler that does not follow the parent ignores its flag", () => {
  const off = traceSamplingFromEnv({ OTEL_TRACES_SAMPLER: "always_off" });
  expect(sampleRequest(off, `00-${PARENT}-01`)).toBe(false);
  const on = traceSamplingFromEnv({ OTEL_TRACES_SAMPLER: "always_on" });
  expect(sampleRequest(on, `00-${PARENT}-00`)).toBe(true);
});

test("a malformed traceparent is no parent: the request is a root", () => {
  const none = { rootRatio: 0, followParent: true };
  expect(sampleRequest(none, "00-nothex-01")).toBe(false);
  expect(sampleRequest({ rootRatio: 1, followParent: true }, "garbage-00")).toBe(true);
});

test("roots are recorded at the ratio", () => {
  const s = { rootRatio: 0.25, followParent: true };
  let kept = 0;
  for (let i = 0; i < 20_000; i++) if (sampleRoot(s)) kept++;
  expect(kept / 20_000).toBeGreaterThan(0.22);
  expect(kept / 20_000).toBeLessThan(0.28);
  expect(sampleRoot({ rootRatio: 0, followParent: true })).toBe(false);
});

test("a value the SDKs would not know stops start-up with one line naming it", () => {
  expect(() => traceSamplingFromEnv({ OTEL_TRACES_SAMPLER: "sometimes" })).toThrow(/^OTEL_TRACES_SAMPLER=sometimes is not one of always_on, /);
  expect(() => traceSamplingFromEnv({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "2" })).toThrow("OTEL_TRACES_SAMPLER_ARG=2 is not a ratio from 0 to 1");
  expect(() => traceSamplingFromEnv({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "half" })).toThrow("OTEL_TRACES_SAMPLER_ARG=half is not a ratio from 0 to 1");
});
