/** Refusals of the cache domain, each a one-line reason; src/server maps kind -> status. */
import { NixFormatError } from "../nix/errors.ts";

export type RefusalKind = "bad-request" | "forbidden" | "conflict" | "too-large" | "not-found";

export class Refusal extends Error {
  override name = "Refusal";
  constructor(
    readonly kind: RefusalKind,
    message: string,
  ) {
    super(message);
  }
}

/** Too much of one kind of work is under way: the same request can succeed shortly (503). */
export class Busy extends Error {
  override name = "Busy";
}

/** No upstream had what was asked for and at least one failed to answer (an error status, a
 * deadline passed, a body over its bound): not "absent" (it may be there), and no fault of
 * the client's. Its message names each failure, for the log (the client gets the status). */
export class UpstreamsFailed extends Error {
  override name = "UpstreamsFailed";
}

/** `fn`, its malformed-input error (a client's) as a 400 Refusal. */
export function asBadRequest<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof NixFormatError) throw new Refusal("bad-request", err.message);
    throw err;
  }
}
