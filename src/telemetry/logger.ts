/** Structured logs: one JSON object per line on stderr. */

export type LogLevel = "debug" | "info" | "warn" | "error";
const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
  /** The same logger, each line also handed to `also` (the OTLP log export). */
  tee(also: (line: string) => void): Logger;
}

/** An Error as a log field: name, message, errno code, stack and the chain of causes (an
 * Error's own properties are not enumerable, so JSON would print `{}`). */
function errorFields(value: unknown, depth = 0): unknown {
  if (!(value instanceof Error)) return value;
  const fields: LogFields = { name: value.name, message: value.message };
  const code = (value as { code?: unknown }).code;
  if (code !== undefined) fields.code = code;
  if (value.stack) fields.stack = value.stack;
  if (value.cause !== undefined && depth < 4) fields.cause = errorFields(value.cause, depth + 1);
  return fields;
}

/** Lines written in one turn of the event loop go out in one write: with an access-log line
 * per request, one write(2) per line cost a busy server more than the request itself. What
 * is pending is written synchronously when the process exits. */
function batchedStderr(): (line: string) => void {
  let pending = "";
  const flush = () => {
    if (pending === "") return;
    const out = pending;
    pending = "";
    process.stderr.write(out);
  };
  process.once("exit", () => {
    if (pending !== "") require("node:fs").writeSync(2, pending);
  });
  return (line) => {
    if (pending === "") setImmediate(flush);
    pending += line;
    if (pending.length > 64 * 1024) flush();
  };
}

/** The current time as an ISO string, formatted once per millisecond: an access-log line per
 * request made toISOString a visible share of a narinfo hit. */
let isoMs = 0;
let isoText = "";
function isoNow(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoMs = ms;
    isoText = new Date(ms).toISOString();
  }
  return isoText;
}

let stderrWriter: ((line: string) => void) | null = null;

export function createLogger(
  level: LogLevel = "info",
  base: LogFields = {},
  write: (line: string) => void = (stderrWriter ??= batchedStderr()),
): Logger {
  const min = rank[level];
  const emit = (lvl: LogLevel, msg: string, fields?: LogFields) => {
    if (rank[lvl] < min) return;
    const record: LogFields = { time: isoNow(), level: lvl, msg, ...base };
    if (fields) {
      for (const k in fields) {
        const v = fields[k];
        record[k] = v instanceof Error ? errorFields(v) : v;
      }
    }
    write(JSON.stringify(record) + "\n");
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) => createLogger(level, { ...base, ...fields }, write),
    tee: (also) =>
      createLogger(level, base, (line) => {
        write(line);
        also(line);
      }),
  };
}

export const silentLogger: Logger = createLogger("error", {}, () => {});
