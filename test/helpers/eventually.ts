/** The one way tests wait for something to become true: poll until it does, or fail at a
 * deadline that guards against hanging (it is not a measurement). */

/** Not there yet: `find` returns one of these to be asked again. */
type NotYet = undefined | null | false;

export interface EventuallyOptions {
  /** How long to keep asking before failing; 10 s unless told. */
  deadlineMs?: number;
  /** The pause between one answer and the next question; 20 ms unless told. */
  everyMs?: number;
  /** More to say when it fails (what was seen instead, a process's last log lines). */
  explain?: () => string | Promise<string>;
}

/** The first answer of `find` that is not undefined, null or false (so a check returning a
 * boolean resolves with `true`). Fails with `${what}: not within ${deadlineMs} ms`, followed
 * by `explain()` when given. An error thrown by `find` fails at once. */
export async function eventually<T>(what: string, find: () => T | NotYet | Promise<T | NotYet>, opts: EventuallyOptions = {}): Promise<T> {
  const { deadlineMs = 10_000, everyMs = 20, explain } = opts;
  const giveUp = Date.now() + deadlineMs;
  for (;;) {
    const found = await find();
    if (found !== undefined && found !== null && found !== false) return found;
    if (Date.now() > giveUp) {
      const more = explain ? `\n${await explain()}` : "";
      throw new Error(`${what}: not within ${deadlineMs} ms${more}`);
    }
    await Bun.sleep(everyMs);
  }
}
