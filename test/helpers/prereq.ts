/** Tests that need something from the machine (Nix, a database server) skip without it,
 * saying why; under NCPS_TEST_STRICT=1 (set by .ci/run) a missing prerequisite fails. */
import { test } from "bun:test";

export const strict = process.env.NCPS_TEST_STRICT === "1";

/** Returns `test`, or a skipping stand-in (or, in strict mode, a failing one) with the reason. */
export function testIf(available: boolean, reason: string): typeof test {
  if (available) return test;
  if (strict) {
    const failing = ((name: string) =>
      test(name, () => {
        throw new Error(`prerequisite missing: ${reason}`);
      })) as unknown as typeof test;
    return failing;
  }
  console.warn(`skipped: ${reason}`);
  return test.skip;
}

export function hasCommand(cmd: string): boolean {
  return Bun.which(cmd) !== null;
}
