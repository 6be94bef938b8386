/** Start-up failures a user can fix: each becomes one line naming the step, no stack trace. */

export class StartupError extends Error {
  override name = "StartupError";
  readonly userFacing = true;
}

/** Run one start-up step; its failure becomes a one-line StartupError naming the step. */
export async function startupStep<T>(what: string, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof StartupError) throw err;
    throw new StartupError(`${what}: ${(err as Error).message ?? String(err)}`.replace(/\s*\n\s*/g, " "));
  }
}
