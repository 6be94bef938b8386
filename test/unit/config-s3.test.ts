/** S3 storage options: Go ncps names, exactly one of local or S3, one-line errors. */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ConfigError } from "../../src/config/load.ts";
import { testHome } from "./config-helpers.ts";

const { home, load, loadError, writeTemp } = testHome();

const s3 = {
  "cache-storage-s3-bucket": "nix-cache",
  "cache-storage-s3-endpoint": "http://minio.lan:9000",
  "cache-storage-s3-access-key-id": "AKID",
  "cache-storage-s3-secret-access-key": "SECRET",
};

describe("S3 storage options", () => {
  test("flags give S3 storage; no local storage directory; SQLite stays in the default data directory", async () => {
    const { config } = await load({ ...s3, "cache-storage-s3-force-path-style": true, "cache-storage-s3-prefix": "ncps" });
    expect(config).toMatchObject({
      cacheStorageS3Bucket: "nix-cache",
      cacheStorageS3Endpoint: "http://minio.lan:9000",
      cacheStorageS3AccessKeyId: "AKID",
      cacheStorageS3SecretAccessKey: "SECRET",
      cacheStorageS3ForcePathStyle: true,
      cacheStorageS3Prefix: "ncps",
      cacheDatabaseUrl: `sqlite:${join(home, ".local", "share", "ncps", "db", "db.sqlite")}`,
    });
    expect(config.cacheStorageLocal).toBeUndefined();
    expect(config.cacheStorageS3Region).toBeUndefined();
    const root = await load(s3, {}, { isRoot: true });
    expect(root.config.cacheDatabaseUrl).toBe("sqlite:/var/lib/ncps/db/db.sqlite");
  });

  test("environment variables and config-file keys as in the Go ncps", async () => {
    const env = {
      CACHE_STORAGE_S3_BUCKET: "b",
      CACHE_STORAGE_S3_ENDPOINT: "https://s3.eu-west-1.amazonaws.com",
      CACHE_STORAGE_S3_REGION: "eu-west-1",
      CACHE_STORAGE_S3_ACCESS_KEY_ID: "k",
      CACHE_STORAGE_S3_SECRET_ACCESS_KEY: "s",
      CACHE_STORAGE_S3_FORCE_PATH_STYLE: "false",
      CACHE_STORAGE_S3_PREFIX: "p",
    };
    const fromEnv = (await load({}, env)).config;
    expect(fromEnv).toMatchObject({ cacheStorageS3Bucket: "b", cacheStorageS3Region: "eu-west-1", cacheStorageS3ForcePathStyle: false, cacheStorageS3Prefix: "p" });
    const path = writeTemp(
      "yaml",
      "cache:\n  storage:\n    s3:\n      bucket: ncps-cache\n      endpoint: http://garage.lan:3900\n      region: garage\n      access-key-id: GK1\n      secret-access-key: sk\n      force-path-style: true\n",
    );
    const { config, warnings } = await load({ config: path });
    expect(warnings).toEqual([]);
    expect(config).toMatchObject({
      cacheStorageS3Bucket: "ncps-cache",
      cacheStorageS3Endpoint: "http://garage.lan:3900",
      cacheStorageS3Region: "garage",
      cacheStorageS3AccessKeyId: "GK1",
      cacheStorageS3SecretAccessKey: "sk",
      cacheStorageS3ForcePathStyle: true,
    });
    expect(config.cacheStorageLocal).toBeUndefined();
  });

  test("a local directory given in any way together with a bucket is refused", async () => {
    const both = "--cache-storage-local and --cache-storage-s3-bucket are both set: choose local or S3 storage";
    const fileWithLocal = writeTemp("yaml", "cache:\n  storage:\n    local: /srv/ncps\n");
    for (const [args, env] of [
      [{ ...s3, "cache-storage-local": "/srv/ncps" }, {}],
      [s3, { CACHE_STORAGE_LOCAL: "/srv/ncps" }],
      [s3, { CACHE_DATA_PATH: "/srv/ncps" }],
      [{ ...s3, config: fileWithLocal }, {}],
    ] as const) {
      const err = await loadError(args, env);
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.message).toBe(both);
    }
  });

  test("an empty local flag counts as not set, so it may stand beside a bucket", async () => {
    const { config } = await load({ ...s3, "cache-storage-local": "" });
    expect(config.cacheStorageLocal).toBeUndefined();
  });

  test("missing S3 pieces are named in one line: the endpoint, and a key without the other", async () => {
    const err = await loadError({ "cache-storage-s3-bucket": "b", "cache-storage-s3-secret-access-key": "s" });
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toBe("S3 storage needs --cache-storage-s3-endpoint");
    const half = await loadError({ "cache-storage-s3-bucket": "b", "cache-storage-s3-endpoint": "http://s3.lan", "cache-storage-s3-secret-access-key": "s" });
    expect(half.message).toBe("S3 storage needs --cache-storage-s3-access-key-id too (or neither key, to take credentials from the AWS chain: environment, profile, role)");
  });

  test("no keys at all is accepted: credentials come from the AWS chain at start", async () => {
    const { config } = await load({ "cache-storage-s3-bucket": "b", "cache-storage-s3-endpoint": "http://s3.lan" });
    expect(config.cacheStorageS3AccessKeyId).toBeUndefined();
  });

  test("S3 options without a bucket are refused", async () => {
    const { "cache-storage-s3-bucket": _bucket, ...noBucket } = s3;
    expect((await loadError(noBucket)).message).toBe(
      "--cache-storage-s3-endpoint is set but --cache-storage-s3-bucket is not (S3 storage needs a bucket)",
    );
    expect((await loadError({}, { CACHE_STORAGE_S3_FORCE_PATH_STYLE: "true" })).message).toStartWith("--cache-storage-s3-force-path-style is set but");
  });

  test("the endpoint needs its scheme; the bucket is a name", async () => {
    for (const endpoint of ["minio.lan:9000", "s3.amazonaws.com", "ftp://host"]) {
      const err = await loadError({ ...s3, "cache-storage-s3-endpoint": endpoint });
      expect(err.message).toStartWith(`invalid --cache-storage-s3-endpoint "${endpoint}"`);
      expect(err.message).not.toContain("\n");
    }
    expect((await loadError({ ...s3, "cache-storage-s3-bucket": "a/b" })).message).toStartWith('invalid --cache-storage-s3-bucket "a/b"');
  });
});
