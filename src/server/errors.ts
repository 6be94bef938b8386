/** Domain errors -> HTTP status, as Nix reads them: 404 "not here" (Nix moves on), 400 bad
 * input with a one-line reason, 5xx only for real faults (Nix retries those). */
import { Refusal, type RefusalKind } from "../cache/errors.ts";
import { NixFormatError } from "../nix/errors.ts";
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

export function errorResponse(err: unknown, logger: Logger, context: Record<string, unknown>): Response {
  if (err instanceof NixFormatError) return textResponse(400, err.message);
  if (err instanceof Refusal) {
    logger.info("request refused", { ...context, reason: err.message });
    return textResponse(refusalStatus[err.kind], err.message);
  }
  logger.error("request failed", { ...context, error: err, stack: (err as Error)?.stack });
  return textResponse(500, "internal error");
}
