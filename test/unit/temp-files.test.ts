import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { removeStaleTempFiles, tempFileName } from "../../src/cache/temp-files.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";

test("temp files of gone processes and of this pid's earlier runs are removed; current ones stay", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ncps-stale-"));
  try {
    const child = Bun.spawn(["true"]);
    await child.exited; // its pid is now free
    const dead = `ncps-${child.pid}-0123abcd-1-download-nar_x.nar.xz`;
    const earlierRunOfThisPid = `ncps-${process.pid}-deadbeef-7-upload`; // e.g. PID 1 in a restarted container
    const mine = tempFileName("download", "nar/y.nar");
    const live = `ncps-1-0123abcd-2-download`; // pid 1 is alive
    const foreign = "something-else";
    expect(mine).toMatch(new RegExp(`^ncps-${process.pid}-[0-9a-f]{8}-\\d+-download-nar_y\\.nar$`));
    for (const name of [dead, earlierRunOfThisPid, mine, live, foreign]) await writeFile(join(dir, name), "x");
    expect(await removeStaleTempFiles(dir, silentLogger)).toBe(2);
    expect(existsSync(join(dir, dead))).toBe(false);
    expect(existsSync(join(dir, earlierRunOfThisPid))).toBe(false);
    for (const name of [mine, live, foreign]) expect(existsSync(join(dir, name))).toBe(true);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
