/** `serve` applies pending migrations itself unless told not to; told not to, it refuses an
 * out-of-date schema with one line instead of failing later with "no such table". */
import { expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { migrationsFor } from "../../src/db/migrations.ts";
import { ncpsCommand, startNcpsProcess } from "../helpers/ncps.ts";

const upstreamArgs = ["--cache-upstream-url", "http://127.0.0.1:9", "--cache-upstream-public-key", "x-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="];

test("--no-cache-database-auto-migrate refuses a fresh database until `ncps migrate up` ran", async () => {
  const dataDir = await mkdtemp(join(tmpdir(), "ncps-automigrate-"));
  const db = `sqlite:${join(dataDir, "db.sqlite")}`;
  try {
    const refused = Bun.spawnSync(
      [...ncpsCommand(), "serve", "--server-addr", "127.0.0.1:0", "--cache-storage-local", dataDir, "--cache-database-url", db, "--no-cache-database-auto-migrate", ...upstreamArgs],
      { stderr: "pipe", stdout: "pipe" },
    );
    expect(refused.exitCode).toBe(1);
    const lines = refused.stderr.toString().split("\n").filter(Boolean);
    const pending = migrationsFor("sqlite").map((m) => m.name).join(", ");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toStartWith("ncps: ");
    expect(lines[0]).toEndWith(`database schema is not up to date (pending: ${pending}): run \`ncps migrate up\``);

    const migrated = Bun.spawnSync([...ncpsCommand(), "migrate", "up", "--cache-database-url", db], { stdout: "pipe", stderr: "pipe" });
    expect(migrated.exitCode).toBe(0);

    const ncps = await startNcpsProcess({ dataDir, args: ["--cache-database-url", db, "--no-cache-database-auto-migrate", ...upstreamArgs] });
    expect((await fetch(`${ncps.url}/nix-cache-info`)).status).toBe(200);
    await ncps.stop();
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}, 60_000);
