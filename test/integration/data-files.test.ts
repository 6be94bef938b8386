/** What ncps leaves on disk in its data directory: who may read it, and what a killed run
 * leaves behind. */
import { afterAll, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startInProcess } from "../helpers/ncps.ts";

const work = await mkdtemp(join(tmpdir(), "ncps-data-files-"));
afterAll(() => rm(work, { recursive: true, force: true }));

const mode = async (path: string) => (await stat(path)).mode & 0o777;

test("a new data directory is 0700 and the SQLite database (it holds the signing key) 0600, -wal and -shm too", async () => {
  const dataDir = join(work, "fresh");
  const ncps = await startInProcess(dataDir, { "cache-upstream-url": [] });
  try {
    expect(await mode(dataDir)).toBe(0o700);
    const db = join(dataDir, "db", "db.sqlite");
    for (const file of [db, `${db}-wal`, `${db}-shm`]) expect([file, await mode(file)]).toEqual([file, 0o600]);
  } finally {
    await ncps.stop();
  }
});

test("a database an earlier version left 0644 is 0600 after the next start", async () => {
  const dataDir = join(work, "upgraded");
  const db = join(dataDir, "db", "db.sqlite");
  await (await startInProcess(dataDir, { "cache-upstream-url": [] })).stop();
  await chmod(db, 0o644);
  const ncps = await startInProcess(dataDir, { "cache-upstream-url": [] });
  try {
    expect(await mode(db)).toBe(0o600);
  } finally {
    await ncps.stop();
  }
});

test("temp files a killed run left in local storage are removed at start; a running process's stay", async () => {
  const dataDir = join(work, "killed");
  const child = Bun.spawn(["true"]);
  await child.exited; // its pid is now free
  const stale = [
    "nar/.tmp-0123456789abcdef", // a cross-filesystem putFile, before temp names carried their run
    `nar/.tmp-${child.pid}-0123abcd-0123456789abcdef`,
    `log/.tmp-${child.pid}-0123abcd-0123456789abcdef`,
    ".tmp/0123456789abcdef01234567", // a putStream
    `.tmp/${child.pid}-0123abcd-0123456789abcdef`,
  ];
  const live = ["nar/.tmp-1-0123abcd-0123456789abcdef", ".tmp/1-0123abcd-0123456789abcdef"]; // pid 1 is alive
  const objects = ["nar/0123456789abcdef.nar"];
  for (const rel of [...stale, ...live, ...objects]) {
    await mkdir(join(dataDir, rel, ".."), { recursive: true });
    await writeFile(join(dataDir, rel), "x");
  }
  const ncps = await startInProcess(dataDir, { "cache-upstream-url": [] });
  try {
    for (const rel of stale) expect([rel, existsSync(join(dataDir, rel))]).toEqual([rel, false]);
    for (const rel of [...live, ...objects]) expect([rel, existsSync(join(dataDir, rel))]).toEqual([rel, true]);
  } finally {
    await ncps.stop();
  }
});
