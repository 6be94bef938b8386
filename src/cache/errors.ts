/** Refusals of the cache domain, each a one-line reason; src/server maps kind -> status. */
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
