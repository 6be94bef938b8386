/** The one error type the pure Nix-format code throws for malformed input. Callers (the
 * server, ingest) map it to a 400 or to "upstream sent garbage" without string matching. */
export class NixFormatError extends Error {
  /** The narinfo/cache-info field or input part that was wrong, when there is one. */
  readonly field?: string;

  constructor(message: string, field?: string) {
    // One line: these messages end up in HTTP reason bodies and log lines.
    super(message.replace(/[\r\n]+/g, " "));
    this.name = "NixFormatError";
    if (field !== undefined) this.field = field;
  }
}
