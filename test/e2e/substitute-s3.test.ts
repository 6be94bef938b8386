/** The real-client scenario with NARs in S3 (s3rver, run under node) instead of a local
 * directory: ncps streams verified downloads up as multipart uploads and serves hits as
 * S3 GETs. */
import { afterAll, expect } from "bun:test";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nixAvailable } from "../helpers/nix.ts";
import { testIf } from "../helpers/prereq.ts";
import { s3Client, s3Flags, s3rverAvailable, startS3rver, type S3rver } from "../helpers/s3rver.ts";
import { describeSubstitution } from "../helpers/substitution.ts";

const PREFIX = "e2e";
let s3: S3rver | undefined;
let dbDir: string | undefined;

describeSubstitution("e2e: real Nix substitutes through ncps (sqlite, S3 storage on s3rver)", async () => {
  if (!s3rverAvailable) throw new Error("prerequisite missing: node and the s3rver devDependency");
  s3 = await startS3rver();
  dbDir = await mkdtemp(join(tmpdir(), "ncps-e2e-s3-db-"));
  return [
    ...s3Flags(s3, PREFIX),
    // the suite names a local storage directory; an empty value unsets it (local + S3 is an error)
    "--cache-storage-local=",
    "--cache-database-url", `sqlite:${join(dbDir, "db.sqlite")}`,
  ];
});

testIf(nixAvailable && s3rverAvailable, "the real Nix and s3rver are needed")(
  "the NARs were stored in the bucket, under the prefix, and no upload was left open",
  async () => {
    const client = s3Client(s3!);
    const page = await client.send(new ListObjectsV2Command({ Bucket: s3!.bucket }));
    const keys = (page.Contents ?? []).map((item) => item.Key!);
    // the suite publishes 10 paths plus the 100 MB one with zstd, 4 paths with xz
    expect(keys.filter((key) => /^e2e\/nar\/[0-9a-z]+\.nar\.zst$/.test(key)).length).toBe(11);
    expect(keys.filter((key) => /^e2e\/nar\/[0-9a-z]+\.nar\.xz$/.test(key)).length).toBe(4);
    expect(keys.every((key) => key.startsWith(`${PREFIX}/`))).toBe(true);
    // the 100 MB NAR went up in parts
    await s3!.settle();
    expect(s3!.requests().some((r) => r.uploadId !== undefined)).toBe(true);
    expect(s3!.openMultipartUploads()).toEqual([]);
    client.destroy();
  },
  60_000,
);

afterAll(async () => {
  await s3?.stop();
  if (dbDir) await rm(dbDir, { recursive: true, force: true });
});
