/** Where a Worker's entrypoint is. From source: `sourceUrl`, the file itself. In a compiled
 * binary (build.ts lists each worker as an extra entrypoint) it is embedded under the
 * entrypoints' common root, src/, where `fromSrc`, a path relative to src/, names it. */
export function workerEntry(fromSrc: string, sourceUrl: URL): string {
  if (Bun.main.startsWith("/$bunfs/")) return `./${fromSrc}`;
  return sourceUrl.href;
}
