/** Where a second entry of this program is, from source or inside a compiled binary (where
 * `Bun.main` is a path under /$bunfs/). */

const compiled = () => Bun.main.startsWith("/$bunfs/");

/** Where a Worker's entrypoint is. From source: `sourceUrl`, the file itself. In a compiled
 * binary (build.ts lists each worker as an extra entrypoint) it is embedded under the
 * entrypoints' common root, src/, where `fromSrc`, a path relative to src/, names it. */
export function workerEntry(fromSrc: string, sourceUrl: URL): string {
  if (compiled()) return `./${fromSrc}`;
  return sourceUrl.href;
}

/** The command that starts this program again: the compiled binary itself, or bun with
 * src/main.ts (not Bun.main, which in tests is the test runner's file). */
export function selfCommand(): string[] {
  if (compiled()) return [process.execPath];
  return [process.execPath, new URL("./main.ts", import.meta.url).pathname];
}
