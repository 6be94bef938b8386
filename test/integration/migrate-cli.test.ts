/** `ncps migrate status` and `ncps migrate up [--dry-run]` as users run them, on a fresh
 * SQLite file: the output lines and what each command does to the database. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { migrationsFor } from "../../src/db/migrations.ts";
import { ncpsCommand } from "../helpers/ncps.ts";

/** Every SQLite migration the binary embeds, one line each, as `migrate` prints them. */
const lines = (prefix: string) => migrationsFor("sqlite").map((m) => `${prefix}  ${m.name}\n`).join("");

describe("ncps migrate", () => {
  let work: string;
  let dbUrl: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "ncps-migrate-"));
    dbUrl = `sqlite:${join(work, "db.sqlite")}`;
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  async function ncps(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const proc = Bun.spawn([...ncpsCommand(), "migrate", ...args, "--cache-database-url", dbUrl], {
      stdout: "pipe",
      stderr: "pipe",
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" },
    });
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    return { code, stdout, stderr };
  }

  /** Read straight from the file, not through ncps: does the schema exist? */
  function hasNarInfoTable(): boolean {
    const db = new Database(dbUrl.slice("sqlite:".length));
    try {
      return db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'narinfos'").get() !== null;
    } finally {
      db.close();
    }
  }

  // One sequence: each step depends on what the previous one did to the same file.
  test("status, dry run, up, status, up again", async () => {
    const fresh = await ncps("status");
    expect(fresh.code).toBe(0);
    expect(fresh.stdout).toBe(lines("pending"));

    const dryRun = await ncps("up", "--dry-run");
    expect(dryRun.code).toBe(0);
    expect(dryRun.stdout).toBe(lines("would apply"));
    expect((await ncps("status")).stdout).toBe(lines("pending"));
    expect(hasNarInfoTable()).toBe(false);

    const up = await ncps("up");
    expect(up.code).toBe(0);
    expect(up.stdout).toBe(lines("applied"));
    expect((await ncps("status")).stdout).toBe(lines("applied"));
    expect(hasNarInfoTable()).toBe(true);

    const again = await ncps("up");
    expect(again.code).toBe(0);
    expect(again.stdout).toBe("database is up to date\n");
    expect((await ncps("status")).stdout).toBe(lines("applied"));
  }, 60_000);
});
