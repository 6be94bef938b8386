/** The real-Nix scenario with ncps keeping its metadata in PostgreSQL (a fresh database). */
import { afterAll, expect } from "bun:test";
import { nixAvailable } from "../helpers/nix.ts";
import { testIf } from "../helpers/prereq.ts";
import { createTestDatabase, testServer, type TestDatabase } from "../helpers/server-databases.ts";
import { describeSubstitution } from "../helpers/substitution.ts";

const name = "e2e: real Nix substitutes through ncps (postgres, local storage)";
const server = await testServer("postgres");
let db: TestDatabase | undefined;

if (server.url === null) {
  testIf(false, `${name}: ${server.problem}`)(name, () => {});
} else {
  const serverUrl = server.url;
  describeSubstitution(name, async () => {
    db = await createTestDatabase(serverUrl);
    return ["--cache-database-url", db.url];
  });

  testIf(nixAvailable, "the real Nix (nix-bin) is needed for end-to-end tests")("ncps kept the narinfos of the scenario in PostgreSQL", async () => {
    const [row] = await db!.query<{ n: number | string }>("SELECT count(*) AS n FROM narinfos");
    expect(Number(row!.n)).toBeGreaterThanOrEqual(14); // the 10-path and the 4-path closures
  });
}

afterAll(async () => {
  await db?.drop();
});
