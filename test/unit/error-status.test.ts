/** The one table from error type to HTTP status (src/server/errors.ts): one example of each
 * type that reaches src/server, what a client sees, and what the log keeps. */
import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Busy, Refusal, UpstreamsFailed, type RefusalKind } from "../../src/cache/errors.ts";
import { LockerClosedError, LockTimeoutError } from "../../src/lock/locker.ts";
import { NixFormatError } from "../../src/nix/errors.ts";
import { errorResponse, errorStatus, type ServerErrorType } from "../../src/server/errors.ts";
import { BlobRangeError, InvalidBlobKeyError } from "../../src/storage/blob-store.ts";
import { TooLargeError } from "../../src/streams.ts";
import { createLogger } from "../../src/telemetry/logger.ts";

/** A real SQLite error: a write to a database opened read-only (SQLITE_READONLY). */
function readOnlyDatabaseError(): Error {
  const dir = mkdtempSync(join(tmpdir(), "ncps-error-status-"));
  try {
    const path = join(dir, "db.sqlite");
    const writable = new Database(path);
    writable.run("CREATE TABLE t (x INTEGER)");
    writable.close();
    const readOnly = new Database(path, { readonly: true });
    try {
      readOnly.run("INSERT INTO t VALUES (1)");
    } catch (err) {
      return err as Error;
    } finally {
      readOnly.close();
    }
    throw new Error("the write to a read-only database succeeded");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One example per type: a Record, so a new type in the table needs an example here too. */
const examples: Record<ServerErrorType, { err: unknown; status: number }> = {
  NixFormatError: { err: new NixFormatError("narinfo has no StorePath", "StorePath"), status: 400 },
  Refusal: { err: new Refusal("conflict", "a different narinfo is already stored"), status: 409 },
  InvalidBlobKeyError: { err: new InvalidBlobKeyError('blob key "../x" contains ".."'), status: 400 },
  BlobRangeError: { err: new BlobRangeError({ start: 20, end: 30 }, 10), status: 416 },
  TooLargeError: { err: new TooLargeError(1024), status: 413 },
  LockTimeoutError: { err: new LockTimeoutError("download:nar/x.nar", 30_000), status: 503 },
  LockerClosedError: { err: new LockerClosedError(), status: 503 },
  DatabaseUnwritable: { err: readOnlyDatabaseError(), status: 503 },
  Busy: { err: new Busy("2 build logs are being fetched from upstreams already"), status: 503 },
  UpstreamsFailed: { err: new UpstreamsFailed("log/x.drv: no upstream answered: http://127.0.0.1:1: no answer within 500 ms"), status: 502 },
};

function answer(err: unknown) {
  const lines: string[] = [];
  const logger = createLogger("info", {}, (line) => lines.push(line));
  const res = errorResponse(err, logger, { route: "narinfo" });
  return { res, logs: lines.map((line) => JSON.parse(line)) };
}

describe("error -> status table", () => {
  for (const [type, { err, status }] of Object.entries(examples)) {
    test(`${type} is answered ${status}`, () => {
      expect(errorStatus(err)).toMatchObject({ type, status });
      expect(answer(err).res.status).toBe(status);
    });
  }

  test("each refusal kind has its status", () => {
    const statuses: Record<RefusalKind, number> = { "bad-request": 400, forbidden: 403, "not-found": 404, conflict: 409, "too-large": 413 };
    for (const [kind, status] of Object.entries(statuses)) {
      expect(errorStatus(new Refusal(kind as RefusalKind, "no")).status).toBe(status);
    }
  });

  test("an error of no listed type is a 500", () => {
    expect(errorStatus(new TypeError("x is undefined"))).toEqual({ type: "unknown", status: 500, headers: {} });
    expect(errorStatus("a thrown string").status).toBe(500);
  });

  test("a database error that is not about writability (a constraint) is a 500", () => {
    const db = new Database(":memory:");
    db.run("CREATE TABLE t (x INTEGER PRIMARY KEY)");
    db.run("INSERT INTO t VALUES (1)");
    let err: unknown;
    try {
      db.run("INSERT INTO t VALUES (1)");
    } catch (e) {
      err = e;
    }
    db.close();
    expect((err as { code?: string }).code).toStartWith("SQLITE_CONSTRAINT");
    expect(errorStatus(err).status).toBe(500);
  });
});

describe("what the client sees and what the log keeps", () => {
  test("a 4xx body is the one-line reason, logged at info", async () => {
    const { res, logs } = answer(new Refusal("too-large", "narinfo exceeds 65536 bytes"));
    expect(await res.text()).toBe("narinfo exceeds 65536 bytes\n");
    expect(logs).toEqual([expect.objectContaining({ level: "info", route: "narinfo", status: 413, reason: "narinfo exceeds 65536 bytes" })]);
  });

  test("a 416 says the object's size in Content-Range", () => {
    expect(answer(examples.BlobRangeError.err).res.headers.get("content-range")).toBe("bytes */10");
  });

  test("a 500 body is only the status phrase; the log line has the message and the stack", async () => {
    const cause = Object.assign(new Error("disk full"), { code: "ENOSPC" });
    const { res, logs } = answer(new Error("commit of nar/x.nar failed at /var/lib/ncps", { cause }));
    const body = await res.text();
    expect(body).toBe("Internal Server Error\n");
    expect(body).not.toContain("/var/lib/ncps");
    expect(logs).toHaveLength(1);
    const log = logs[0];
    expect(log).toMatchObject({ level: "error", route: "narinfo", status: 500, type: "unknown" });
    expect(log.error.message).toBe("commit of nar/x.nar failed at /var/lib/ncps");
    expect(log.error.stack).toContain("error-status.test.ts");
    expect(log.error.cause).toMatchObject({ message: "disk full", code: "ENOSPC" });
  });

  test("a 503 body is only the status phrase; the log line has the detail", async () => {
    const { res, logs } = answer(examples.LockTimeoutError.err);
    expect(res.status).toBe(503);
    expect(await res.text()).toBe("Service Unavailable\n");
    expect(logs[0]).toMatchObject({ level: "error", status: 503, type: "LockTimeoutError" });
    expect(logs[0].error.message).toContain("download:nar/x.nar");
  });

  test("a read-only database: 503 with the SQLite code in the log", async () => {
    const { res, logs } = answer(examples.DatabaseUnwritable.err);
    expect(await res.text()).toBe("Service Unavailable\n");
    expect(logs[0].error.code).toStartWith("SQLITE_READONLY");
  });
});
