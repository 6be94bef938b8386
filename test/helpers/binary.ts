/** The compiled ncps, for tests of the release artefacts (binary, install.sh, systemd unit):
 * built by build.ts into a temp directory (never dist/, which a developer or CI may be
 * using). A test file that uses it calls removeCompiledNcps() in afterAll: bun test emits no
 * process exit event to clean up on, and each build is over 100 MB. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build, type BuildResult } from "../../build.ts";
import { startNcpsProcess, type NcpsProcess } from "./ncps.ts";

export interface CompiledNcps extends BuildResult {
  /** The directory holding the binary and SHA256SUMS, laid out like dist/. */
  dir: string;
  /** The binary for this machine. */
  binary: string;
}

let compiled: Promise<CompiledNcps> | undefined;

export function compiledNcps(): Promise<CompiledNcps> {
  compiled ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), "ncps-dist-"));
    const result = await build({ outDir: dir });
    return { ...result, dir, binary: result.binaries[0]! };
  })();
  return compiled;
}

export async function removeCompiledNcps(): Promise<void> {
  const pending = compiled;
  compiled = undefined;
  const built = await pending?.catch(() => undefined);
  if (built) await rm(built.dir, { recursive: true, force: true });
}

/** startNcpsProcess with `command` (a binary, or a wrapper script that ends by exec-ing one)
 * in place of NCPS_BIN. startNcpsProcess reads NCPS_BIN synchronously, before its first
 * await when `dataDir` is given, so setting it around the call affects only this start. */
export function startNcpsBinary(
  command: string,
  opts: Parameters<typeof startNcpsProcess>[0] & { dataDir: string },
): Promise<NcpsProcess> {
  const saved = process.env.NCPS_BIN;
  process.env.NCPS_BIN = command;
  try {
    return startNcpsProcess(opts);
  } finally {
    if (saved === undefined) delete process.env.NCPS_BIN;
    else process.env.NCPS_BIN = saved;
  }
}
