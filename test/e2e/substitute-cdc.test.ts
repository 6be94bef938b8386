/** The real-client scenario with content-defined chunking on (issue 18): narinfos say
 * Compression: none, the NARs (a 100 MB zstd one, small xz ones) are chunked as they are
 * verified, served decompressed while they download and reassembled (or sent as zstd frames
 * to Nix) once stored; fresh stores verify every path. On local storage and S3 (SQLite), and
 * on PostgreSQL and MariaDB, whose chunk tables are then checked. */
import { afterAll, expect } from "bun:test";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nixAvailable } from "../helpers/nix.ts";
import { testIf } from "../helpers/prereq.ts";
import { createTestDatabase, testServer, type ServerDialect, type TestDatabase } from "../helpers/server-databases.ts";
import { s3Client, s3Flags, s3rverAvailable, startS3rver, type S3rver } from "../helpers/s3rver.ts";
import { describeSubstitution } from "../helpers/substitution.ts";

describeSubstitution("e2e: real Nix substitutes through a CDC-enabled ncps (sqlite, local storage)", () => ["--cache-cdc-enabled"]);

let s3: S3rver | undefined;
let dbDir: string | undefined;

describeSubstitution("e2e: real Nix substitutes through a CDC-enabled ncps (sqlite, S3 storage on s3rver)", async () => {
  if (!s3rverAvailable) throw new Error("prerequisite missing: node and the s3rver devDependency");
  s3 = await startS3rver();
  dbDir = await mkdtemp(join(tmpdir(), "ncps-e2e-cdc-s3-db-"));
  return [...s3Flags(s3, "cdc"), "--cache-storage-local=", "--cache-database-url", `sqlite:${join(dbDir, "db.sqlite")}`, "--cache-cdc-enabled"];
});

testIf(nixAvailable && s3rverAvailable, "the real Nix and s3rver are needed")(
  "the bucket holds chunks only, no NAR whole, each chunk a zstd frame",
  async () => {
    const client = s3Client(s3!);
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: s3!.bucket, ContinuationToken: token }));
      keys.push(...(page.Contents ?? []).map((item) => item.Key!));
      token = page.NextContinuationToken;
    } while (token);
    // 100 MB of NAR (incompressible) at 64 KiB on average: well over a thousand chunks
    expect(keys.length).toBeGreaterThan(1000);
    expect(keys.every((key) => /^cdc\/chunk\/[0-9a-f]{2}\/[0-9a-f]{64}$/.test(key))).toBe(true);
    client.destroy();
  },
  60_000,
);

afterAll(async () => {
  await s3?.stop();
  if (dbDir) await rm(dbDir, { recursive: true, force: true });
});

for (const dialect of ["postgres", "mysql"] as ServerDialect[]) {
  const name = `e2e: real Nix substitutes through a CDC-enabled ncps (${dialect}, local storage)`;
  const server = await testServer(dialect);
  if (server.url === null) {
    testIf(false, `${name}: ${server.problem}`)(name, () => {});
    continue;
  }
  const serverUrl = server.url;
  let db: TestDatabase | undefined;
  describeSubstitution(name, async () => {
    db = await createTestDatabase(serverUrl);
    return ["--cache-database-url", db.url, "--cache-cdc-enabled"];
  });
  testIf(nixAvailable, "the real Nix (nix-bin) is needed for end-to-end tests")(`${dialect}: the NARs were recorded as chunk lists`, async () => {
    const [held] = await db!.query<{ n: number | string }>("SELECT count(*) AS n FROM nar_chunks");
    const [nars] = await db!.query<{ n: number | string }>("SELECT count(*) AS n FROM nars WHERE chunked = 1");
    expect(Number(held!.n)).toBeGreaterThan(1000);
    expect(Number(nars!.n)).toBeGreaterThanOrEqual(14); // the 10-path and the 4-path closures
  });
  afterAll(async () => {
    await db?.drop();
  });
}

