/** Tests that need something from the machine (Nix, a database server) skip without it,
 * saying why; under NCPS_TEST_STRICT=1 (set by .ci/run) a missing prerequisite fails. */
import { describe, test } from "bun:test";

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

/** Returns `describe`, or `describe.skip` when `available` is false; in strict mode the block
 * runs anyway, so its tests (testIf's failing stand-ins, or a beforeAll that checks) fail for
 * the missing prerequisite instead of vanishing. Saying why a block is skipped is left to
 * those tests (testIf warns once per file). */
export function describeIf(available: boolean): typeof describe {
  return available || strict ? describe : describe.skip;
}

export function hasCommand(cmd: string): boolean {
  return Bun.which(cmd) !== null;
}
