/** PUT or DELETE enabled without a put token is allowed (documented), but said at start in one
 * warning line naming who can then write. */
import { afterAll, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../src/telemetry/logger.ts";
import { startInProcess } from "../helpers/ncps.ts";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** The warnings a start with these flags logs. */
async function startWarnings(flags: Record<string, unknown>): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), "ncps-open-writes-"));
  dirs.push(dir);
  const lines: string[] = [];
  const ncps = await startInProcess(dir, { "cache-upstream-url": [], ...flags }, createLogger("warn", {}, (l) => lines.push(l)));
  await ncps.stop();
  return lines.map((l) => JSON.parse(l)).filter((r) => r.level === "warn").map((r) => r.msg as string);
}

test("PUT and DELETE without any token: one warning that anyone who can reach ncps can write and delete", async () => {
  const warnings = await startWarnings({ "cache-allow-put-verb": true, "cache-allow-delete-verb": true });
  expect(warnings.filter((w) => w.includes("--cache-put-token"))).toEqual([
    "PUT and DELETE enabled without --cache-put-token: anyone who can reach ncps can write and delete",
  ]);
});

test("PUT with only a read token: the warning says the read token writes", async () => {
  const warnings = await startWarnings({ "cache-allow-put-verb": true, "cache-get-token": "r" });
  expect(warnings.filter((w) => w.includes("--cache-put-token"))).toEqual([
    "PUT enabled without --cache-put-token: anyone with the read token can write",
  ]);
});

test("with a put token, or with writes off, no such warning", async () => {
  expect((await startWarnings({ "cache-allow-put-verb": true, "cache-put-token": "w" })).filter((w) => w.includes("--cache-put-token"))).toEqual([]);
  expect((await startWarnings({})).filter((w) => w.includes("--cache-put-token"))).toEqual([]);
});
