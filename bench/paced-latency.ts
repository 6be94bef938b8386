/** Request latency at a fixed request rate, for latency under load that the probe itself
 * does not cause. wrk sends as fast as the server answers: on a 2-core machine that takes a
 * core for wrk and one for the server's answers, so misses measured beside it compete with the
 * probe more than with each other. Here GETs go out on a schedule, each timed from when it
 * was due (not when it was sent), so a stalled server shows in full rather than delaying the
 * next request (no coordinated omission). */
import { median } from "./stats.ts";

/** The rate the miss benchmarks probe hit latency at, beside their misses. */
export const HIT_PROBE_RATE = 200;

export interface PacedLatency {
  count: number;
  p50ms: number;
  p99ms: number;
  maxMs: number;
  errors: number;
}

/** GETs of `url`, `perSecond` of them, for `seconds` or until `until` settles (whichever is first). */
export async function pacedLatency(url: string, opts: { perSecond: number; seconds: number; until?: Promise<unknown> }): Promise<PacedLatency> {
  const intervalMs = 1000 / opts.perSecond;
  let stopped = false;
  void opts.until?.finally(() => (stopped = true));
  const latencies: number[] = [];
  let errors = 0;
  const inFlight = new Set<Promise<void>>();
  const start = performance.now();
  for (let i = 0; !stopped; i++) {
    const due = start + i * intervalMs;
    if (due - start >= opts.seconds * 1000) break;
    const wait = due - performance.now();
    if (wait > 0) await Bun.sleep(wait);
    const request = fetch(url)
      .then(async (res) => {
        await res.arrayBuffer();
        if (res.status === 200) latencies.push(performance.now() - due);
        else errors++;
      })
      .catch(() => void errors++)
      .finally(() => inFlight.delete(request));
    inFlight.add(request);
  }
  await Promise.all(inFlight);
  const sorted = latencies.toSorted((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return { count: sorted.length, p50ms: median(sorted), p99ms: at(0.99), maxMs: sorted.at(-1) ?? NaN, errors };
}
