/** S3 credentials from the standard AWS chain when no key is given (issue 17), against s3rver:
 * from the environment, from a shared credentials file's profile, and a one-line start-up
 * error when the chain finds none. s3rver knows one access key id (S3RVER) and answers any
 * other with 403 InvalidAccessKeyId (it does not check v4 signatures), so a wrong key in the
 * source under test failing is what shows that source is the one read. */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNcps } from "../../src/compose.ts";
import { loadConfig } from "../../src/config/load.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { testIf } from "../helpers/prereq.ts";
import { s3rverAvailable, startS3rver, type S3rver } from "../helpers/s3rver.ts";
import { makeSyntheticCache, type SyntheticCache } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const test = testIf(s3rverAvailable, "s3rver under node is needed");
const work = await mkdtemp(join(tmpdir(), "ncps-s3-credentials-"));
let s3: S3rver;
let cache: SyntheticCache;
let upstream: Upstream;

beforeAll(async () => {
  if (!s3rverAvailable) return;
  s3 = await startS3rver();
  cache = await makeSyntheticCache(join(work, "upstream"));
  upstream = await startUpstream(cache.dir);
});

afterAll(async () => {
  await s3?.stop();
  await upstream?.stop();
  await rm(work, { recursive: true, force: true });
});

let runs = 0;

/** Runs `fn` with only `vars` of the AWS_* environment (and no shared files unless named,
 * so this machine's ~/.aws is never read; no instance metadata, which is not here). */
async function withAwsEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("AWS_")));
  for (const k of Object.keys(saved)) delete process.env[k];
  Object.assign(process.env, {
    AWS_SHARED_CREDENTIALS_FILE: join(work, `none-${++runs}`, "credentials"),
    AWS_CONFIG_FILE: join(work, `none-${runs}`, "config"),
    AWS_EC2_METADATA_DISABLED: "true",
    ...vars,
  });
  try {
    return await fn();
  } finally {
    for (const k of Object.keys(process.env)) if (k.startsWith("AWS_")) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

/** ncps on the bucket with no access key options; resolves to its start-up error, or to
 * what a miss stored in the bucket. */
async function serveWithoutKeys(name: string): Promise<{ error: string } | { stored: string[] }> {
  const dir = join(work, name);
  const config = await loadConfig(
    {
      "server-addr": "127.0.0.1:0",
      "cache-hostname": "ncps-test",
      "cache-database-url": `sqlite:${join(dir, "db.sqlite")}`,
      "cache-temp-path": join(dir, "tmp"),
      "cache-upstream-url": [upstream.url],
      "cache-upstream-public-key": [cache.publicKey],
      "cache-storage-s3-bucket": s3.bucket,
      "cache-storage-s3-endpoint": s3.endpoint,
      "cache-storage-s3-force-path-style": true,
      "cache-storage-s3-prefix": name,
    },
    {},
  );
  let ncps;
  try {
    ncps = await startNcps(config, silentLogger);
  } catch (err) {
    return { error: (err as Error).message };
  }
  try {
    const path = await cache.add(name);
    expect((await fetch(`${ncps.url}/${path.hash}.narinfo`)).status).toBe(200);
    const nar = await fetch(`${ncps.url}/${path.narinfo.url}`);
    expect(Buffer.from(await nar.arrayBuffer()).equals(Buffer.from(path.file))).toBe(true);
    await ncps.cache.drain();
    // s3rver keeps an object as <key>._S3rver_object beside its metadata
    const files = (await readdir(join(s3.dir, s3.bucket), { recursive: true })).map(String);
    return { stored: files.filter((f) => f.startsWith(`${name}/nar/`) && f.endsWith("._S3rver_object")).map((f) => f.replace("._S3rver_object", "")) };
  } finally {
    await ncps.stop();
  }
}

describe("S3 credentials from the AWS chain (no --cache-storage-s3-access-key-id)", () => {
  test("from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY: a miss is stored in the bucket; a key S3 does not know is refused at start", async () => {
    const served = await withAwsEnv({ AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "from-env" }, () => serveWithoutKeys("env"));
    expect(served).toEqual({ stored: [expect.stringMatching(/^env\/nar\/.+\.nar/)] });
    const refused = await withAwsEnv({ AWS_ACCESS_KEY_ID: "NOBODY", AWS_SECRET_ACCESS_KEY: "from-env" }, () => serveWithoutKeys("env-wrong"));
    expect(refused).toEqual({ error: `storage: S3 bucket ${s3.bucket} at ${s3.endpoint} refused access: check the access key id and secret access key (HTTP 403)` });
  });

  test("from a shared credentials file (AWS_SHARED_CREDENTIALS_FILE): the profile AWS_PROFILE names, else [default]", async () => {
    const file = join(work, "shared-credentials");
    await writeFile(file, "[default]\naws_access_key_id = NOBODY\naws_secret_access_key = default-secret\n\n[ncps]\naws_access_key_id = S3RVER\naws_secret_access_key = profile-secret\n");
    const served = await withAwsEnv({ AWS_SHARED_CREDENTIALS_FILE: file, AWS_PROFILE: "ncps" }, () => serveWithoutKeys("profile"));
    expect(served).toEqual({ stored: [expect.stringMatching(/^profile\/nar\/.+\.nar/)] });
    const viaDefault = await withAwsEnv({ AWS_SHARED_CREDENTIALS_FILE: file }, () => serveWithoutKeys("profile-default"));
    expect(viaDefault).toEqual({ error: expect.stringContaining("refused access") });
  });

  test("no credentials anywhere: one start-up line that says where ncps looked", async () => {
    const result = await withAwsEnv({}, () => serveWithoutKeys("none"));
    const error = (result as { error: string }).error;
    expect(error).toStartWith(`storage: S3 bucket ${s3.bucket} at ${s3.endpoint}: no credentials: neither --cache-storage-s3-access-key-id`);
    expect(error).toContain("AWS_PROFILE");
    expect(error.split("\n")).toHaveLength(1);
  });
});
