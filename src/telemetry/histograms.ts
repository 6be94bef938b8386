/** Histograms kept here as bucket counts and handed to the exporters as finished data when
 * one collects (a MetricProducer, the SDK's extension point for metrics from elsewhere).
 * The SDK's own histograms hash their attribute set on every record (sort, JSON): measured
 * at about 3 µs of a narinfo hit's 40. Recording here is a Map lookup and a bucket search. */
import type { Attributes, HrTime } from "@opentelemetry/api";
import { ValueType } from "@opentelemetry/api";
import { millisToHrTime } from "@opentelemetry/core";
import { AggregationTemporality, DataPointType, type CollectionResult, type HistogramMetricData, type MetricProducer } from "@opentelemetry/sdk-metrics";

interface Series {
  attrs: Attributes;
  /** counts[i]: values ≤ boundaries[i] and above the boundary before; the last: above all */
  counts: number[];
  sum: number;
  count: number;
  min: number;
  max: number;
}

export class BucketHistogram {
  private readonly series = new Map<string, Series>();

  constructor(
    readonly name: string,
    readonly description: string,
    readonly unit: string,
    readonly boundaries: readonly number[],
  ) {}

  /** `key` names the label set; `attrs` makes it, the first time only. */
  record(value: number, key = "", attrs: () => Attributes = () => ({})) {
    let s = this.series.get(key);
    if (!s) {
      s = { attrs: attrs(), counts: new Array<number>(this.boundaries.length + 1).fill(0), sum: 0, count: 0, min: Infinity, max: -Infinity };
      this.series.set(key, s);
    }
    const b = this.boundaries;
    let lo = 0;
    let hi = b.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (value <= b[mid]!) hi = mid;
      else lo = mid + 1;
    }
    s.counts[lo]!++;
    s.sum += value;
    s.count++;
    if (value < s.min) s.min = value;
    if (value > s.max) s.max = value;
  }

  /** Cumulative since `start`: what Prometheus expects, and OTLP's default. */
  data(start: HrTime, now: HrTime): HistogramMetricData {
    return {
      descriptor: { name: this.name, description: this.description, unit: this.unit, valueType: ValueType.DOUBLE },
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.HISTOGRAM,
      dataPoints: [...this.series.values()].map((s) => ({
        startTime: start,
        endTime: now,
        attributes: s.attrs,
        value: { buckets: { boundaries: [...this.boundaries], counts: [...s.counts] }, sum: s.sum, count: s.count, min: s.min, max: s.max },
      })),
    };
  }
}

/** The histograms as one more source for a metric reader (`metricProducers`); `histograms`
 * is asked at each collection. */
export function histogramProducer(histograms: () => readonly BucketHistogram[], scope: { name: string; version: string }): MetricProducer {
  const start = millisToHrTime(Date.now());
  return {
    collect: async (): Promise<CollectionResult> => {
      const now = millisToHrTime(Date.now());
      return {
        // A reader keeps the SDK's resource and takes only the scopes from here.
        resourceMetrics: { resource: undefined as never, scopeMetrics: [{ scope, metrics: histograms().map((h) => h.data(start, now)) }] },
        errors: [],
      };
    },
  };
}
