/** A wait with a deadline whose timer goes with it: once `work` settles, nothing is left
 * pending (a bare race with Bun.sleep or setTimeout would keep the timer, and with it the
 * process, alive until it fires). */

export const TIMED_OUT: unique symbol = Symbol("timed out");

/** `work`'s value (or its rejection), or TIMED_OUT when it has not settled within `ms`.
 * `work` itself goes on; stopping it is the caller's business. */
export async function within<T>(ms: number, work: Promise<T>): Promise<T | typeof TIMED_OUT> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<typeof TIMED_OUT>((resolve) => (timer = setTimeout(() => resolve(TIMED_OUT), ms)));
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
