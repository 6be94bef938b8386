/** Errors -> HTTP status, as Nix reads them: 404 "not here" (Nix moves on), 4xx bad input with
 * a one-line reason, 5xx only for real faults (Nix retries those). One table names every error
 * type that reaches src/server; a 5xx body is only the status phrase, its detail goes to the log. */
import { STATUS_CODES } from "node:http";
import { Busy, Refusal, UpstreamsFailed, type RefusalKind } from "../cache/errors.ts";
import { LockerClosedError, LockTimeoutError } from "../lock/locker.ts";
import { NixFormatError } from "../nix/errors.ts";
import { BlobRangeError, InvalidBlobKeyError } from "../storage/blob-store.ts";
import { TooLargeError } from "../streams.ts";
import type { Logger } from "../telemetry/logger.ts";

export function textResponse(status: number, text: string, headers: Record<string, string> = {}): Response {
  return new Response(text.endsWith("\n") ? text : text + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  });
}

export const notFound = () => textResponse(404, "not found");

const refusalStatus: Record<RefusalKind, number> = {
  "bad-request": 400,
  forbidden: 403,
  "not-found": 404,
  conflict: 409,
  "too-large": 413,
};

/** How one error type is answered: `matches` recognises it, `answer` decides. */
interface ErrorRule {
  matches(err: unknown): boolean;
  answer(err: unknown): { status: number; headers: Record<string, string> };
}

/** A rule for errors `matches` recognises, typed as such for `status` and `headers`. */
function rule<E>(
  matches: (err: unknown) => err is E,
  status: number | ((err: E) => number),
  headers: (err: E) => Record<string, string> = () => ({}),
): ErrorRule {
  return {
    matches,
    answer: (err) => ({ status: typeof status === "number" ? status : status(err as E), headers: headers(err as E) }),
  };
}

const instanceOf =
  <E>(type: abstract new (...args: never[]) => E) =>
  (err: unknown): err is E =>
    err instanceof type;

/** SQLite's "cannot write now" codes (extended codes too: SQLITE_IOERR_WRITE, SQLITE_BUSY_SNAPSHOT
 * ...): another writer holds the database, its file turned read-only, the disk is full or
 * failing. 503, not 500: the request was fine and the same one can succeed once the database
 * can be written again; a load balancer or Nix retrying later is the right reaction. Other
 * database errors (a constraint, a bad query) are bugs: 500 like any unknown error. */
const UNWRITABLE_DATABASE = /^SQLITE_(BUSY|LOCKED|READONLY|IOERR|FULL|CANTOPEN)(_|$)/;

/** Every error type that crosses into src/server. Adding one here without a rule, or a rule
 * without a name, does not compile: each new error type gets its status decided. */
export type ServerErrorType =
  | "NixFormatError"
  | "Refusal"
  | "InvalidBlobKeyError"
  | "BlobRangeError"
  | "TooLargeError"
  | "LockTimeoutError"
  | "LockerClosedError"
  | "DatabaseUnwritable"
  | "Busy"
  | "UpstreamsFailed";

/** Checked in this order; anything that matches none is a 500. */
const errorRules: Record<ServerErrorType, ErrorRule> = {
  NixFormatError: rule(instanceOf(NixFormatError), 400),
  Refusal: rule(instanceOf(Refusal), (err) => refusalStatus[err.kind]),
  InvalidBlobKeyError: rule(instanceOf(InvalidBlobKeyError), 400),
  // the range was checked against the size first: the object changed size in between
  BlobRangeError: rule(instanceOf(BlobRangeError), 416, (err) => ({ "content-range": `bytes */${err.size}` })),
  TooLargeError: rule(instanceOf(TooLargeError), 413),
  // busy or shutting down: the same request can succeed on retry (or on another replica)
  LockTimeoutError: rule(instanceOf(LockTimeoutError), 503),
  LockerClosedError: rule(instanceOf(LockerClosedError), 503),
  DatabaseUnwritable: rule(isDatabaseUnwritable, 503),
  Busy: rule(instanceOf(Busy), 503),
  // a gateway's failure to get an answer: the same request may succeed later
  UpstreamsFailed: rule(instanceOf(UpstreamsFailed), 502),
};

function isDatabaseUnwritable(err: unknown): err is Error {
  const code = (err as { code?: unknown } | null)?.code;
  return err instanceof Error && typeof code === "string" && UNWRITABLE_DATABASE.test(code);
}

/** The status (and any headers) for `err`: its rule's, else 500. */
export function errorStatus(err: unknown): { type: ServerErrorType | "unknown"; status: number; headers: Record<string, string> } {
  for (const [type, r] of Object.entries(errorRules)) {
    if (r.matches(err)) return { type: type as ServerErrorType, ...r.answer(err) };
  }
  return { type: "unknown", status: 500, headers: {} };
}

/** A 4xx says why in one line (logged at info); a 5xx says only its status phrase, and the
 * error, with its stack and causes, goes to the log. */
export function errorResponse(err: unknown, logger: Logger, context: Record<string, unknown>): Response {
  const { type, status, headers } = errorStatus(err);
  if (status < 500) {
    const reason = err instanceof Error ? err.message : String(err);
    logger.info("request refused", { ...context, status, reason });
    return textResponse(status, reason, headers);
  }
  logger.error("request failed", { ...context, status, type, error: err });
  return textResponse(status, STATUS_CODES[status] ?? "Error", headers);
}
