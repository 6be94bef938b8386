#!/usr/bin/env bun
/** The test suite's OTLP/gRPC collector (test/helpers/otlp-collector.ts) in a process of its
 * own, for benchmarks: it prints its URL, then answers each line on stdin with the number of
 * spans received so far. Run under SCHED_IDLE (`chrt --idle 0`), it stands in for a
 * collector on another machine: it decodes what ncps sends with the cycles ncps and the load
 * generator leave, instead of taking a share of the same two cores from them (at nice 19 it
 * still preempted them for its time slices). */
import { startCollector } from "../test/helpers/otlp-collector.ts";

const collector = await startCollector();
console.log(collector.url);
for await (const _ of console) console.log(collector.spans.length);
await collector.stop();
