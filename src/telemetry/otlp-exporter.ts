/** OTLP/gRPC export in a process of its own (otlp-exporter-process.ts, started as `ncps __otlp-exporter`).
 *
 * A process, not a Worker thread: with the exporter on a thread of ncps's process, 1% of
 * requests traced cost the main thread 2-2.5 µs more CPU per narinfo hit (about -8% of hit
 * throughput) while it ran the same instructions and system calls (bench/hit-instructions.ts,
 * strace), even with every other thread moved to another CPU; in a child process the same
 * exporter cost nothing measurable (bench/hit-path.ts --against-plain: 1.013 and 1.003).
 *
 * Off the main thread in the first place: grpc-js and the protobuf
 * encoding on the main thread cost a traced span 30-110 µs and paused the event loop for
 * up to a quarter of a second per batch (bench/hit-path.ts --telemetry: narinfo-hit p99 from
 * ~25 ms to 100-420 ms, CPU per hit up by half at 1% sampling). Here the main thread only
 * copies the finished spans, metrics and log lines into messages.
 *
 * Spans go over as JSON lines, written when each span ends, not kept as the SDK's span
 * objects until a batch is due (BatchSpanProcessor) and then cloned object by object into a
 * message: at 10% sampling that retention and cloning was two thirds of tracing's cost on
 * the main thread (hits 33-34k/s with it, 35-43k/s with spans dropped at their end). A line
 * is one native JSON.stringify of a small object, and a batch of lines one transferred
 * buffer; the span object is garbage once it has ended. */
import type { Attributes } from "@opentelemetry/api";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import type { PushMetricExporter, ResourceMetrics } from "@opentelemetry/sdk-metrics";
import type { ReadableSpan, SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { within } from "../within.ts";
import { selfCommand } from "../worker-entry.ts";
import { EXPORTER_COMMAND } from "./exporter-command.ts";

/** A span as a message carries it: plain data, its span context included. */
export interface SpanMessage {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  traceFlags: number;
  traceState?: string;
  parentSpanId?: string;
  parentIsRemote?: boolean;
  startTime: [number, number];
  endTime: [number, number];
  status: { code: number; message?: string };
  attributes: Attributes;
  events: { name: string; time: [number, number]; attributes?: Attributes }[];
  scope: { name: string; version?: string };
}

export type ToOtlpExporter =
  | { type: "init"; url: string; resource: Attributes }
  | { type: "spans"; lines: Uint8Array }
  | { type: "metrics"; id: number; scopeMetrics: ResourceMetrics["scopeMetrics"] }
  | { type: "logs"; lines: Uint8Array }
  | { type: "shutdown"; id: number };

export type FromOtlpExporter = { type: "done"; id: number; error?: string } | { type: "ready" };

export interface OtlpExporter {
  /** Hands each recorded span to the exporter as it ends (in place of a batch processor). */
  spanProcessor: SpanProcessor;
  metricExporter: PushMetricExporter;
  /** One JSON log line (as the logger writes it), to go out as an OTLP log record. */
  logLine(line: string): void;
  /** Sends what is pending and ends the exporter process: after the providers' own shutdown. */
  shutdown(): Promise<void>;
  /** `listener` hears why, each time the exporter process ends before shutdown (killed,
   * crashed), and in how many ms a new one is started: telemetry until then is dropped. */
  onEnded(listener: (why: string, restartInMs: number) => void): void;
}

/** After an exporter process ends, the next is started after a delay that doubles, from the
 * first to the second, while they keep ending; one that ran for the longest delay starts the
 * count again. So a crash loses a second of telemetry, and a crash loop costs a start a minute. */
export interface RestartDelays {
  firstMs: number;
  maxMs: number;
}

const defaultRestartDelays: RestartDelays = { firstMs: 1_000, maxMs: 60_000 };

/** What an export or stop waiting on an exporter that is gone is answered with. */
const ENDED = "the OTLP exporter process ended";

const SHUTDOWN_MS = 5_000;
/** Messages held while the exporter process starts (a batch each LINES_BATCH_MS at most),
 * and their lines' bytes: a process that never says it listens must not hold 1,000 batches
 * of up to MAX_LINES_TEXT each. */
const MAX_HELD = 1_000;
const MAX_HELD_BYTES = 16 << 20;
const encoder = new TextEncoder();
/** Lines (log records, spans) gathered for this long, or up to MAX_LINES_TEXT, per message. */
const LINES_BATCH_MS = 200;
const MAX_LINES_TEXT = 1 << 20;

function spanMessage(span: ReadableSpan): SpanMessage {
  const ctx = span.spanContext();
  return {
    name: span.name,
    kind: span.kind,
    traceId: ctx.traceId,
    spanId: ctx.spanId,
    traceFlags: ctx.traceFlags,
    traceState: ctx.traceState?.serialize(),
    parentSpanId: span.parentSpanContext?.spanId,
    parentIsRemote: span.parentSpanContext?.isRemote,
    startTime: span.startTime,
    endTime: span.endTime,
    status: span.status,
    attributes: span.attributes,
    events: span.events.map((e) => ({ name: e.name, time: e.time, attributes: e.attributes })),
    scope: { name: span.instrumentationScope.name, version: span.instrumentationScope.version },
  };
}

/** Text gathered into one message of `type` per LINES_BATCH_MS (or MAX_LINES_TEXT). */
function lineBatch(type: "logs" | "spans", post: (message: ToOtlpExporter) => void) {
  let lines = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const send = () => {
    clearTimeout(timer);
    timer = undefined;
    if (lines === "") return;
    // UTF-8 bytes: a long string cost more to post
    const bytes = encoder.encode(lines);
    lines = "";
    post({ type, lines: bytes });
  };
  return {
    add(text: string) {
      lines += text;
      if (lines.length > MAX_LINES_TEXT) send();
      else if (!timer) (timer = setTimeout(send, LINES_BATCH_MS)).unref();
    },
    send,
  };
}

export function startOtlpExporter(url: string, resource: Attributes, restarts: RestartDelays = defaultRestartDelays): OtlpExporter {
  const pending = new Map<number, (error?: string) => void>();
  let nextId = 1;
  // Messages wait until the process listens (it loads grpc-js first); after that, in order.
  let waiting: ToOtlpExporter[] | null = [];
  let heldBytes = 0;
  /** The current process has ended and the next is not started yet. */
  let gone = false;
  /** Set once shutdown begins: the exporter ending after that is no loss. */
  let ended: Promise<void> | null = null;
  const endedListeners: ((why: string, restartInMs: number) => void)[] = [];
  let restartInMs = restarts.firstMs;
  let restartTimer: ReturnType<typeof setTimeout> | undefined;
  let exporter: ReturnType<typeof Bun.spawn>;

  const start = () => {
    waiting = [];
    heldBytes = 0;
    gone = false;
    const startedAt = Date.now();
    const proc = Bun.spawn([...selfCommand(), EXPORTER_COMMAND], {
      stdio: ["ignore", "inherit", "inherit"],
      serialization: "advanced",
      ipc(message: FromOtlpExporter) {
        if (proc !== exporter) return; // a message from a process already given up
        if (message.type === "ready") {
          const held = waiting ?? [];
          waiting = null;
          for (const m of held) post(m);
          return;
        }
        const done = pending.get(message.id);
        pending.delete(message.id);
        done?.(message.error);
      },
    });
    proc.unref(); // telemetry never keeps ncps alive
    // An exporter that ended (killed, crashed) loses telemetry, never a request: what is sent
    // to it from then on is dropped, what waits for its answer is answered, and a new one is
    // started after a delay.
    void proc.exited.then((code) => {
      gone = true;
      waiting = null;
      const why = `${ENDED} (${proc.signalCode ?? `exit code ${code}`})`;
      for (const done of pending.values()) done(why);
      pending.clear();
      if (ended) return;
      if (Date.now() - startedAt >= restarts.maxMs) restartInMs = restarts.firstMs;
      const delay = restartInMs;
      restartInMs = Math.min(restartInMs * 2, restarts.maxMs);
      for (const listener of endedListeners) listener(why, delay);
      restartTimer = setTimeout(() => !ended && start(), delay);
      restartTimer.unref();
    });
    exporter = proc;
    post({ type: "init", url, resource });
  };
  /** Sends `message`, or holds it until the process listens; false when it is dropped. */
  const post = (message: ToOtlpExporter): boolean => {
    if (gone) return false;
    if (waiting) {
      const bytes = "lines" in message ? message.lines.length : 0;
      if (waiting.length >= MAX_HELD || heldBytes + bytes > MAX_HELD_BYTES) return false;
      waiting.push(message);
      heldBytes += bytes;
      return true;
    }
    try {
      exporter.send(message);
      return true;
    } catch {
      gone = true; // it ended before `exited` said so
      return false;
    }
  };
  /** A message the process answers; answered here at once when it cannot be sent. */
  const call = (make: (id: number) => ToOtlpExporter): Promise<string | undefined> =>
    new Promise((resolve) => {
      if (gone) return resolve(ENDED);
      const id = nextId++;
      pending.set(id, resolve);
      if (post(make(id))) return;
      pending.delete(id);
      resolve(gone ? ENDED : "dropped: too much held while the OTLP exporter process starts");
    });
  const reportTo = (callback: (result: ExportResult) => void) => (error?: string) =>
    callback(error === undefined ? { code: ExportResultCode.SUCCESS } : { code: ExportResultCode.FAILED, error: new Error(error) });
  start();

  // Lines go over gathered, a message per LINES_BATCH_MS: one per event-loop turn made
  // postMessage 9% of a narinfo hit's time.
  const logLines = lineBatch("logs", post);
  const spanLines = lineBatch("spans", post);

  // Ends the exporter once the providers have flushed into it (they shut down first); a
  // collector that does not answer holds the stop of ncps at most this long.
  const shutdown = () =>
    (ended ??= (async () => {
      clearTimeout(restartTimer);
      logLines.send();
      spanLines.send();
      await within(SHUTDOWN_MS, call((id) => ({ type: "shutdown", id })));
      exporter.kill("SIGKILL"); // it ignores the stop signals ncps's process group gets
    })());

  return {
    spanProcessor: {
      onStart() {},
      onEnd(span) {
        if (!ended && !gone) spanLines.add(`${JSON.stringify(spanMessage(span))}\n`);
      },
      forceFlush: async () => spanLines.send(),
      shutdown: async () => spanLines.send(),
    },
    metricExporter: {
      export: (metrics, callback) => void call((id) => ({ type: "metrics", id, scopeMetrics: metrics.scopeMetrics })).then(reportTo(callback)),
      forceFlush: async () => {},
      shutdown: async () => {},
    },
    logLine(line) {
      if (!ended && !gone) logLines.add(line);
    },
    shutdown,
    onEnded: (listener) => void endedListeners.push(listener),
  };
}
