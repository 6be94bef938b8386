/** A problem with the configuration the user gave: flags, environment, config file.
 * `userFacing` tells the CLI to print the one-line message without a stack trace; any error
 * class may set it (the CLI checks the property, not the class). */
export class ConfigError extends Error {
  readonly userFacing = true;

  constructor(message: string) {
    super(message.replace(/\s*\n\s*/g, " "));
    this.name = "ConfigError";
  }
}

/** True for errors meant to be read by the user as they are (one line, no stack). */
export function isUserFacing(err: unknown): err is Error {
  return err instanceof Error && (err as { userFacing?: unknown }).userFacing === true;
}
