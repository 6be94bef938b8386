/** The compiled ncps, for tests of the release artefacts (binary, install.sh, systemd unit):
 * built by build.ts into a temp directory (never dist/, which a developer or CI may be
 * using). A test file that uses it calls removeCompiledNcps() in afterAll: bun test emits no
 * process exit event to clean up on, and each build is over 100 MB. A test starts it with
 * startNcpsProcess({ command: binary, ... }). */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build, type BuildResult } from "../../build.ts";

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
