/** What ncps leaves on disk in its data directory: who may read it, and what a killed run
 * leaves behind. */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../src/telemetry/logger.ts";
import { makeSyntheticCache } from "../helpers/synthetic-cache.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { startUpstream } from "../helpers/upstream-server.ts";

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

/** chattr +i needs root and a filesystem that supports it; the tests below need both. */
const immutableWorks = (() => {
  const probe = join(tmpdir(), `ncps-chattr-probe-${process.pid}`);
  Bun.spawnSync(["touch", probe]);
  const ok = Bun.spawnSync(["chattr", "+i", probe]).exitCode === 0;
  Bun.spawnSync(["chattr", "-i", probe]);
  Bun.spawnSync(["rm", "-f", probe]);
  return ok;
})();
const chattr = (flag: "+i" | "-i", path: string) => expect(Bun.spawnSync(["chattr", flag, path]).exitCode).toBe(0);

describe.skipIf(!immutableWorks)("a database file ncps cannot write", () => {
  for (const suffix of ["", "-wal", "-shm"]) {
    test(`an immutable db.sqlite${suffix} stops startup with one line naming it (SQLite would open it read-only, or crash on -shm)`, async () => {
      const dataDir = join(work, `immutable${suffix}`);
      await (await startInProcess(dataDir, { "cache-upstream-url": [] })).stop();
      const file = join(dataDir, "db", `db.sqlite${suffix}`);
      await writeFile(file, "", { flag: "a" }); // -wal and -shm are gone after a clean stop
      chattr("+i", file);
      try {
        const err = (await startInProcess(dataDir, { "cache-upstream-url": [] }).then(
          async (n) => {
            await n.stop();
            return null;
          },
          (e: unknown) => e,
        )) as Error | null;
        expect(err?.message).toContain(`${file} is not writable`);
        expect(err?.message).not.toContain("\n");
      } finally {
        chattr("-i", file);
      }
    });
  }

  test("a -wal file that turns immutable while ncps runs fails each write request with a 503 and a log line; ncps keeps serving", async () => {
    const upstreamCache = await makeSyntheticCache(join(work, "wal-upstream"));
    const upstream = await startUpstream(upstreamCache.dir);
    const dataDir = join(work, "wal-live");
    const logged: string[] = [];
    const ncps = await startInProcess(
      dataDir,
      { "cache-upstream-url": [upstream.url], "cache-upstream-public-key": [upstreamCache.publicKey] },
      createLogger("error", {}, (line) => logged.push(line)),
    );
    const wal = join(dataDir, "db", "db.sqlite-wal");
    try {
      const before = await upstreamCache.add("before");
      expect((await fetch(`${ncps.url}/${before.hash}.narinfo`)).status).toBe(200);
      chattr("+i", wal);
      const during = await upstreamCache.add("during");
      const res = await fetch(`${ncps.url}/${during.hash}.narinfo`); // a miss: recording it writes
      expect(res.status).toBe(503); // the database cannot be written now: try again later
      expect(logged).toHaveLength(1);
      expect((await fetch(`${ncps.url}/${before.hash}.narinfo`)).status).toBe(200); // reads still work
      chattr("-i", wal);
      expect((await fetch(`${ncps.url}/${during.hash}.narinfo`)).status).toBe(200);
    } finally {
      chattr("-i", wal);
      await ncps.stop();
      await upstream.stop();
    }
  });
});
