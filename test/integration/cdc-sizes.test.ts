/** The CDC chunk sizes are recorded in the database when CDC is first enabled; a later start
 * with other sizes is refused with one line, and one with CDC off is not checked. */
import { expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ncpsCommand, startNcpsProcess } from "../helpers/ncps.ts";

const upstreamArgs = ["--cache-upstream-url", "http://127.0.0.1:9", "--cache-upstream-public-key", "x-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="];

test("a start with chunk sizes other than those recorded is refused with one line", async () => {
  const dataDir = await mkdtemp(join(tmpdir(), "ncps-cdc-sizes-"));
  const db = `sqlite:${join(dataDir, "db.sqlite")}`;
  const serve = (args: string[]) => [...ncpsCommand(), "serve", "--server-addr", "127.0.0.1:0", "--cache-storage-local", dataDir, "--cache-database-url", db, ...upstreamArgs, ...args];
  try {
    // first use records the sizes (defaults 16384/65536/262144)
    const first = await startNcpsProcess({ dataDir, args: ["--cache-database-url", db, "--cache-cdc-enabled", ...upstreamArgs] });
    await first.stop();

    const refused = Bun.spawnSync(serve(["--cache-cdc-enabled", "--cache-cdc-avg", "32768"]), { stderr: "pipe", stdout: "pipe" });
    expect(refused.exitCode).toBe(1);
    const lines = refused.stderr.toString().split("\n").filter(Boolean);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toStartWith("ncps: content-defined chunking: --cache-cdc-min/-avg/-max are 16384/32768/262144 but this cache's chunks were cut with 16384/65536/262144");

    // the same sizes through the environment, and CDC off with other sizes: both start
    const again = await startNcpsProcess({ dataDir, args: ["--cache-database-url", db, ...upstreamArgs], env: { CACHE_CDC_ENABLED: "true", CACHE_CDC_MIN: "16384" } });
    await again.stop();
    const off = await startNcpsProcess({ dataDir, args: ["--cache-database-url", db, "--cache-cdc-avg", "32768", ...upstreamArgs] });
    await off.stop();
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}, 60_000);

test("chunk sizes that cannot work are refused before anything starts", () => {
  const refused = Bun.spawnSync([...ncpsCommand(), "serve", "--cache-cdc-enabled", "--cache-cdc-min", "70000", ...upstreamArgs], { stderr: "pipe", stdout: "pipe" });
  expect(refused.exitCode).toBe(1);
  const lines = refused.stderr.toString().split("\n").filter(Boolean);
  expect(lines).toHaveLength(1);
  expect(lines[0]).toContain("--cache-cdc-min/-avg/-max: CDC chunk sizes must satisfy min <= avg <= max, got 70000 / 65536 / 262144");
});
