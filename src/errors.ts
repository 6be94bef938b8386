/** Error helpers shared by every layer (next to streams.ts, which holds TooLargeError). */

/** One word for why a system call failed: its errno code (ENOENT, EACCES, ENOTDIR...), else
 * the first line of the message. For messages such as "cannot read config file X: EACCES". */
export function errnoReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code !== "") return code;
  return (err instanceof Error ? err.message : String(err)).split("\n")[0]!;
}
