import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { removeStaleTempFiles } from "../../src/cache/stale-temp.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";

test("temp files of processes that are gone are removed; live ones and others' files stay", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ncps-stale-"));
  try {
    const child = Bun.spawn(["true"]);
    await child.exited; // its pid is now free
    const dead = `ncps-${child.pid}-1-nar_x.nar.xz`;
    const deadUpload = `ncps-upload-${child.pid}-3`;
    const mine = `ncps-${process.pid}-1-nar_y.nar`;
    const live = `ncps-1-2-nar_z.nar`; // pid 1 is always alive
    const foreign = "something-else";
    for (const name of [dead, deadUpload, mine, live, foreign]) await writeFile(join(dir, name), "x");
    expect(await removeStaleTempFiles(dir, silentLogger)).toBe(2);
    expect(existsSync(join(dir, dead))).toBe(false);
    expect(existsSync(join(dir, deadUpload))).toBe(false);
    for (const name of [mine, live, foreign]) expect(existsSync(join(dir, name))).toBe(true);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
