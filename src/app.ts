/** Wiring: config -> backends -> cache -> server. Nothing else lives here. */
import { mkdir } from "node:fs/promises";
import { Cache } from "./cache/cache.ts";
import { loadSigningKey } from "./cache/signing-key.ts";
import { HotNarInfos } from "./cache/hot-narinfos.ts";
import { defaultDownloadLimits } from "./cache/nar-download.ts";
import { StoredNars } from "./cache/stored-nars.ts";
import { removeStaleTempFiles } from "./cache/temp-files.ts";
import { Uploads } from "./cache/uploads.ts";
import type { Config } from "./config/options.ts";
import { parseServerAddr } from "./config/validate.ts";
import type { MetadataStore } from "./db/metadata-store.ts";
import type { Locker } from "./lock/locker.ts";
import { openMetadataStore } from "./db/open.ts";
import { errnoReason } from "./errors.ts";
import { parsePublicKey } from "./nix/signature.ts";
import { createFetchHandler } from "./server/app.ts";
import { textResponse } from "./server/errors.ts";
import type { BlobStore } from "./storage/blob-store.ts";
import { LocalBlobStore } from "./storage/local.ts";
import { createLogger, type Logger } from "./telemetry/logger.ts";
import { netrcAuthorization, parseNetrc, type Netrc } from "./upstream/netrc.ts";
import { UpstreamPool } from "./upstream/pool.ts";
import { parseOrigin, Upstream } from "./upstream/upstream.ts";
import { version } from "./version.ts";

export interface RunningNcps {
  url: string;
  port: number;
  cache: Cache;
  publicKey: string;
  stop(): Promise<void>;
}

/** A startup problem the user can fix: the CLI prints it as one line, no stack trace. */
export class StartupError extends Error {
  override name = "StartupError";
  readonly userFacing = true;
}

/** Run one start-up step; its failure becomes a one-line StartupError naming the step. */
async function startupStep<T>(what: string, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof StartupError) throw err;
    throw new StartupError(`${what}: ${(err as Error).message ?? String(err)}`.replace(/\s*\n\s*/g, " "));
  }
}

async function readNetrc(path: string | undefined, logger: Logger): Promise<Netrc> {
  if (!path) return new Map();
  const file = Bun.file(path);
  if (!(await file.exists())) {
    logger.debug("netrc file not found", { path });
    return new Map();
  }
  return parseNetrc(await file.text());
}

/** Created 0700: the data directory holds the database with the signing key, and uploads. An
 * existing directory keeps the mode its owner gave it. */
async function ensureDir(path: string, what: string) {
  try {
    await mkdir(path, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new StartupError(`cannot create ${what} ${path}: ${errnoReason(err)}`);
  }
}

/** Local directory or S3 bucket; validateConfig made sure exactly one is configured. */
async function openBlobStore(config: Config): Promise<BlobStore> {
  if (config.cacheStorageS3Bucket === undefined) {
    await ensureDir(config.cacheStorageLocal!, "storage directory");
    return new LocalBlobStore(config.cacheStorageLocal!);
  }
  // imported only when used: loading the AWS SDK costs about 200 ms
  const { S3BlobStore } = await import("./storage/s3.ts");
  return new S3BlobStore({
    bucket: config.cacheStorageS3Bucket,
    endpoint: config.cacheStorageS3Endpoint,
    region: config.cacheStorageS3Region,
    accessKeyId: config.cacheStorageS3AccessKeyId!,
    secretAccessKey: config.cacheStorageS3SecretAccessKey!,
    forcePathStyle: config.cacheStorageS3ForcePathStyle,
    prefix: config.cacheStorageS3Prefix,
  });
}

/** With --cache-redis-addrs, replicas coordinate their upstream downloads through Redis. */
async function openReplicaLocker(config: Config, logger: Logger): Promise<Locker | null> {
  if (config.cacheRedisAddrs.length === 0) return null;
  const { RedisLocker } = await import("./lock/redis.ts"); // ioredis loads only when used
  // Until the first PING answers, a failure is the one startup line, not also a log record.
  let reachable = false;
  const whenReachable = (log: (msg: string, fields?: Record<string, unknown>) => void) => (msg: string, fields?: Record<string, unknown>) =>
    reachable && log(msg, fields);
  const lockLogger: Logger = {
    debug: whenReachable(logger.debug),
    info: whenReachable(logger.info),
    warn: whenReachable(logger.warn),
    error: whenReachable(logger.error),
    child: (fields) => logger.child(fields),
  };
  const locker = new RedisLocker({
    addrs: config.cacheRedisAddrs,
    username: config.cacheRedisUsername,
    password: config.cacheRedisPassword,
    db: config.cacheRedisDb,
    tls: config.cacheRedisUseTls,
    keyPrefix: config.cacheLockRedisKeyPrefix,
    logger: lockLogger,
  });
  try {
    await locker.check();
    reachable = true;
  } catch (err) {
    await locker.close().catch(() => {});
    throw err;
  }
  return locker;
}

/** Writes without a put token are allowed by design (documented), but never silently. */
function warnAboutOpenWrites(config: Config, logger: Logger) {
  const verbs = [config.cacheAllowPutVerb && "PUT", config.cacheAllowDeleteVerb && "DELETE"].filter(Boolean);
  if (verbs.length === 0 || config.cachePutToken) return;
  const who = config.cacheGetToken ? "anyone with the read token" : "anyone who can reach ncps";
  logger.warn(`${verbs.join(" and ")} enabled without --cache-put-token: ${who} can write and delete`, { verbs });
}

/** Start ncps and return once it listens. */
export async function startNcps(config: Config, logger: Logger = createLogger(config.logLevel)): Promise<RunningNcps> {
  const { hostname, port } = parseServerAddr(config.serverAddr);
  await ensureDir(config.cacheTempPath, "temp directory");
  await removeStaleTempFiles(config.cacheTempPath, logger);
  const store = await startupStep("storage", () => openBlobStore(config));
  await startupStep("storage", () => store.check());
  const trustedKeys = await startupStep("upstream public key", () => config.cacheUpstreamPublicKeys.map((k) => parsePublicKey(k)));
  const trustedUploadKeys = await startupStep("trusted upload key", () => config.cacheTrustedUploadKeys.map((k) => parsePublicKey(k)));
  const netrc = await startupStep("netrc file", () => readNetrc(config.netrcFile, logger));
  const narOrigins = await startupStep("upstream NAR origin", () => config.cacheUpstreamNarOrigins.map(parseOrigin));

  let db: MetadataStore | null = null;
  let locker: Locker | null = null;
  try {
    const dbPool = { maxOpenConns: config.cacheDatabasePoolMaxOpenConns, maxIdleConns: config.cacheDatabasePoolMaxIdleConns };
    db = await startupStep("database", () => openMetadataStore(config.cacheDatabaseUrl, { migrate: config.cacheDatabaseAutoMigrate, pool: dbPool }));
    const pending = (await db.migrationStatus()).filter((m) => !m.applied).map((m) => m.name);
    if (pending.length > 0) {
      throw new StartupError(`database schema is not up to date (pending: ${pending.join(", ")}): run \`ncps migrate up\``);
    }
    const headerTimeoutMs = config.cacheUpstreamDialerTimeout + config.cacheUpstreamResponseHeaderTimeout;
    const upstreams = config.cacheUpstreamUrls.map(
      (url, i) =>
        new Upstream(url, i, {
          headerTimeoutMs,
          authorization: netrcAuthorization(netrc, new URL(url)),
          extraOrigins: narOrigins,
          logger,
        }),
    );
    // Each upstream request ends within headerTimeoutMs and a lookup starts them at most a
    // hedge delay apart: this bounds a lookup without ever cutting a healthy one short.
    const lookupTimeoutMs = 2 * headerTimeoutMs + upstreams.length * 250;
    const pool = new UpstreamPool(upstreams, {
      trustedKeys,
      negativeTtlMs: config.cacheUpstreamNegativeTtl,
      lookupTimeoutMs,
      acceptUnverifiedCompression: config.cacheAcceptUnverifiedCompression,
      logger,
    });
    void pool.refreshPriorities();
    const signingKey = await startupStep("signing key", () =>
      loadSigningKey(db!, { path: config.cacheSecretKeyPath, hostname: config.cacheHostname }),
    );
    locker = await startupStep("redis", () => openReplicaLocker(config, logger));
    const replicas = locker ? { locker, ttlMs: config.cacheLockDownloadTtl } : undefined;
    const hot = new HotNarInfos();
    const nars = new StoredNars({ db, store, hot, logger });
    const shared = { db, nars, pool, signingKey, signNarInfo: config.cacheSignNarinfo, tempDir: config.cacheTempPath, hot, logger };
    const downloadLimits = { ...defaultDownloadLimits, minBytesPerSecond: config.cacheUpstreamNarMinRate };
    const cache = new Cache({ ...shared, priority: config.cachePriority, replicas, downloadLimits });
    const uploads = new Uploads({
      ...shared,
      store,
      maxUploadBytes: config.cacheMaxUploadSize,
      acceptUnverifiedCompression: config.cacheAcceptUnverifiedCompression,
      trustedUploadKeys: config.cacheRequireTrustedSignature ? trustedUploadKeys : null,
      logger,
    });
    const handle = createFetchHandler({
      cache,
      uploads,
      hostname: config.cacheHostname,
      policy: { allowPut: config.cacheAllowPutVerb, allowDelete: config.cacheAllowDeleteVerb },
      auth: { getToken: config.cacheGetToken, putToken: config.cachePutToken },
      logger,
    });
    warnAboutOpenWrites(config, logger);
    let server: ReturnType<typeof Bun.serve>;
    try {
      // Bun refuses bodies over maxRequestBodySize itself (413); ncps checks the same limit.
      const maxRequestBodySize = Math.max(config.cacheMaxUploadSize, 1024 * 1024) + 1;
      server = Bun.serve({
        hostname,
        port,
        fetch: handle,
        // Production mode, and our own last-resort answer: Bun's development error page shows
        // source lines and paths to whoever sent the request.
        development: false,
        error: (err) => {
          logger.error("request failed outside the handler", { error: err });
          return textResponse(500, "internal error");
        },
        idleTimeout: 120,
        maxRequestBodySize,
      });
    } catch (err) {
      throw new StartupError(`cannot listen on ${config.serverAddr}: ${(err as Error).message}`);
    }
    const url = `http://${hostname === "0.0.0.0" ? "127.0.0.1" : hostname}:${server.port}`;
    logger.info("ncps listening", { url, version, publicKey: cache.publicKey, upstreams: config.cacheUpstreamUrls, database: db.dialect });
    const openDb = db;
    return {
      url,
      port: server.port!,
      cache,
      publicKey: cache.publicKey,
      stop: async () => {
        await server.stop(true);
        await cache.close();
        await replicas?.locker.close();
        await openDb.close();
      },
    };
  } catch (err) {
    await locker?.close().catch(() => {});
    await db?.close().catch(() => {});
    throw err;
  }
}

/** `ncps serve`: run until SIGINT/SIGTERM, then stop cleanly. */
export async function serve(config: Config): Promise<void> {
  const logger = createLogger(config.logLevel);
  const running = await startNcps(config, logger);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      logger.info("shutting down", { signal });
      void running.stop().finally(resolve);
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });
}

export async function migrate(config: Config, opts: { dryRun: boolean; statusOnly: boolean }): Promise<void> {
  const db = await startupStep("database", () => openMetadataStore(config.cacheDatabaseUrl, { migrate: false, pool: { maxOpenConns: config.cacheDatabasePoolMaxOpenConns, maxIdleConns: config.cacheDatabasePoolMaxIdleConns } }));
  try {
    if (opts.statusOnly) {
      for (const m of await db.migrationStatus()) console.log(`${m.applied ? "applied" : "pending"}  ${m.name}`);
      return;
    }
    const applied = await db.migrate({ dryRun: opts.dryRun });
    if (applied.length === 0) console.log("database is up to date");
    for (const name of applied) console.log(`${opts.dryRun ? "would apply" : "applied"}  ${name}`);
  } finally {
    await db.close();
  }
}
