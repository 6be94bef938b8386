/** The composition root: config -> backends -> cache -> server. It only chooses and connects
 * parts; each part's choice of backend lives beside the backends (storage/open.ts,
 * lock/open.ts, db/open.ts). */
import { mkdir } from "node:fs/promises";
import { hostname as machineHostname } from "node:os";
import { Cache } from "./cache/cache.ts";
import { configuredChunkSizes, fixChunkSizes, recordedChunkSizes } from "./cache/chunk-sizes.ts";
import type { ChunkSizes } from "./cache/chunker.ts";
import { loadSigningKey } from "./cache/signing-key.ts";
import { Pins } from "./cache/pins.ts";
import { Realisations } from "./cache/realisations.ts";
import { Eviction } from "./cache/eviction.ts";
import { HotNarInfos } from "./cache/hot-narinfos.ts";
import { defaultDownloadLimits } from "./cache/nar-download.ts";
import { ReplicaPeers } from "./cache/replica-peers.ts";
import { StoredNars } from "./cache/stored-nars.ts";
import { removeStaleTempFiles } from "./cache/temp-files.ts";
import { Uploads } from "./cache/uploads.ts";
import type { Config } from "./config/options.ts";
import { parseSchedule, startSchedule } from "./config/schedule.ts";
import { parseAdvertiseUrl, parseOtelGrpcUrl, parseServerAddr } from "./config/validate.ts";
import type { MetadataStore } from "./db/metadata-store.ts";
import type { Locker } from "./lock/locker.ts";
import { openMetadataStore, poolSettings, requireCurrentSchema } from "./db/open.ts";
import { errnoReason } from "./errors.ts";
import { instrumentedLocker } from "./lock/instrumented.ts";
import { openBroadcast, openLocker, redisChoice } from "./lock/open.ts";
import type { Broadcast } from "./lock/broadcast.ts";
import { StartupError, startupStep } from "./startup.ts";
import { parsePublicKey } from "./nix/signature.ts";
import { createFetchHandler } from "./server/app.ts";
import { parseAddressRange } from "./server/client-address.ts";
import { accessLog, httpMetrics, requestTracing } from "./server/observers.ts";
import { errorResponse } from "./server/errors.ts";
import { openBlobStore, type StorageChoice } from "./storage/open.ts";
import { createLogger, type Logger } from "./telemetry/logger.ts";
import { createTelemetry } from "./telemetry/otel.ts";
import { netrcAuthorization, parseNetrc, type Netrc } from "./upstream/netrc.ts";
import { UpstreamPool } from "./upstream/pool.ts";
import { upstreamProxies } from "./upstream/proxy.ts";
import { parseOrigin, Upstream } from "./upstream/upstream.ts";
import { upstreamIdentity, withoutCredentials } from "./upstream/upstream-url.ts";
import { version } from "./version.ts";

export interface RunningNcps {
  url: string;
  port: number;
  cache: Cache;
  pins: Pins;
  /** null without --cache-max-size */
  eviction: Eviction | null;
  publicKey: string;
  /** Stop listening, let responses and downloads in flight finish, then close everything. */
  stop(): Promise<void>;
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
export function storageChoice(config: Config): StorageChoice {
  if (config.cacheStorageS3Bucket === undefined) return { local: config.cacheStorageLocal! };
  return {
    s3: {
      bucket: config.cacheStorageS3Bucket,
      endpoint: config.cacheStorageS3Endpoint,
      region: config.cacheStorageS3Region,
      accessKeyId: config.cacheStorageS3AccessKeyId,
      secretAccessKey: config.cacheStorageS3SecretAccessKey,
      forcePathStyle: config.cacheStorageS3ForcePathStyle,
      prefix: config.cacheStorageS3Prefix,
    },
  };
}

/** The URL other replicas reach this one at: --cache-advertise-url, else http:// and the
 * address ncps listens on when that is one address, or the machine's host name when it
 * listens on all of them (what other machines can resolve, in a cluster or on a LAN), with
 * the port it listens on. */
export function advertiseUrl(config: Pick<Config, "cacheAdvertiseUrl">, listening: { hostname: string; port: number }): string {
  if (config.cacheAdvertiseUrl !== undefined) return parseAdvertiseUrl(config.cacheAdvertiseUrl);
  const all = listening.hostname === "0.0.0.0" || listening.hostname === "::";
  const host = all ? machineHostname() : listening.hostname;
  return `http://${host.includes(":") ? `[${host}]` : host}:${listening.port}`;
}

/** Writes without a put token are allowed by design (documented), but never silently. */
function warnAboutOpenWrites(config: Config, logger: Logger) {
  const verbs = [config.cacheAllowPutVerb && "PUT", config.cacheAllowDeleteVerb && "DELETE"].filter(Boolean);
  if (verbs.length === 0 || config.cachePutToken) return;
  const who = config.cacheGetToken ? "anyone with the read token" : "anyone who can reach ncps";
  const can = [config.cacheAllowPutVerb && "write", config.cacheAllowDeleteVerb && "delete"].filter(Boolean).join(" and ");
  logger.warn(`${verbs.join(" and ")} enabled without --cache-put-token: ${who} can ${can}`, { verbs });
}

/** With --cache-max-size: eviction when a commit passes the cap, on the schedule if one is
 * set, and once at start (the cap may have been lowered). */
function startEviction(
  config: Config,
  parts: { db: MetadataStore; nars: StoredNars; cache: Cache; locker: Locker; logger: Logger },
): { eviction: Eviction | null; stop(): Promise<void> } {
  const { logger } = parts;
  if (!config.cacheMaxSize) {
    if (config.cacheLruSchedule) logger.warn("--cache-lru-schedule is set without --cache-max-size: nothing will be evicted");
    return { eviction: null, stop: async () => {} };
  }
  const eviction = new Eviction({
    db: parts.db,
    nars: parts.nars,
    isDownloading: (key) => parts.cache.isDownloading(key),
    writeAccessTimes: () => parts.cache.writeAccessTimes(),
    maxBytes: config.cacheMaxSize,
    locker: parts.locker,
    lockTtlMs: config.cacheLockLruTtl,
    logger,
  });
  parts.nars.onRecorded(() => eviction.checkCap("cap"));
  const schedule = config.cacheLruSchedule ? parseSchedule(config.cacheLruSchedule, config.cacheLruScheduleTimezone) : null;
  const job = schedule ? startSchedule(schedule, () => void eviction.trigger("schedule")) : null;
  eviction.checkCap("start");
  logger.info("size cap", { maxBytes: config.cacheMaxSize, schedule: schedule?.text ?? null, timezone: config.cacheLruScheduleTimezone ?? null });
  return {
    eviction,
    stop: async () => {
      job?.stop();
      parts.nars.onRecorded(null);
      await eviction.close();
    },
  };
}

/** Start ncps and return once it listens. */
export async function startNcps(config: Config, consoleLogger: Logger = createLogger(config.logLevel)): Promise<RunningNcps> {
  const observability = createTelemetry({
    prometheus: config.prometheusEnabled,
    otel: config.otelEnabled,
    otelGrpcUrl: config.otelGrpcUrl === undefined ? undefined : parseOtelGrpcUrl(config.otelGrpcUrl).url,
    version,
  });
  const { telemetry } = observability;
  const logger = observability.logLine ? consoleLogger.tee(observability.logLine) : consoleLogger;
  // Otherwise spans, metrics and OTLP log records would go missing without a word.
  observability.onExporterEnded((reason, restartInMs) => logger.error("OTLP exporter process ended: telemetry to the collector is dropped until it is started again", { reason, restartInMs }));
  let db: MetadataStore | null = null;
  let locker: Locker | null = null;
  let broadcast: Broadcast | null = null;
  try {
    const { hostname, port } = parseServerAddr(config.serverAddr);
    await ensureDir(config.cacheTempPath, "temp directory");
    await removeStaleTempFiles(config.cacheTempPath, logger);
    const store = await startupStep("storage", () => openBlobStore(storageChoice(config)));
    const trustedKeys = await startupStep("upstream public key", () => config.cacheUpstreamPublicKeys.map((k) => parsePublicKey(k)));
    const trustedUploadKeys = await startupStep("trusted upload key", () => config.cacheTrustedUploadKeys.map((k) => parsePublicKey(k)));
    const netrc = await startupStep("netrc file", () => readNetrc(config.netrcFile, logger));
    const narOrigins = await startupStep("upstream NAR origin", () => config.cacheUpstreamNarOrigins.map(parseOrigin));

    const trustedProxies = config.serverTrustedProxies.map(parseAddressRange);
    const dbPool = poolSettings(config);
    db = await startupStep("database", () => openMetadataStore(config.cacheDatabaseUrl, { migrate: config.cacheDatabaseAutoMigrate, pool: dbPool }));
    await requireCurrentSchema(db);
    const headerTimeoutMs = config.cacheUpstreamDialerTimeout + config.cacheUpstreamResponseHeaderTimeout;
    const unsigned = new Set(config.cacheUpstreamAcceptUnsigned.map(upstreamIdentity));
    const proxies = await startupStep("upstream proxy", () => upstreamProxies(config.cacheUpstreamUrls, config.cacheUpstreamProxies, process.env));
    const upstreams = config.cacheUpstreamUrls.map(
      (url, i) =>
        new Upstream(url, i, {
          headerTimeoutMs,
          acceptUnsigned: unsigned.has(upstreamIdentity(url)),
          proxy: proxies.get(url),
          authorization: netrcAuthorization(netrc, new URL(url)),
          extraOrigins: narOrigins,
          logger,
          instruments: telemetry,
        }),
    );
    // Each upstream request ends within headerTimeoutMs and a lookup starts them at most a
    // hedge delay apart: this bounds a lookup without ever cutting a healthy one short.
    // (+ 300 ms: the backoff of an upstream's transient-failure retries)
    const lookupTimeoutMs = 2 * headerTimeoutMs + upstreams.length * 250 + 300;
    const pool = new UpstreamPool(upstreams, {
      trustedKeys,
      negativeTtlMs: config.cacheUpstreamNegativeTtl,
      lookupTimeoutMs,
      acceptUnverifiedCompression: config.cacheAcceptUnverifiedCompression,
      logger,
      instruments: telemetry,
    });
    for (const upstream of upstreams.filter((u) => u.proxy !== null)) {
      logger.info("upstream reached through a proxy", { upstream: upstream.url, proxy: upstream.proxy });
    }
    for (const upstream of upstreams.filter((u) => u.acceptsUnsigned)) {
      logger.warn("accepting unsigned narinfos from this upstream (--cache-upstream-accept-unsigned): ncps signs them with its own key", { upstream: upstream.url });
    }
    const signingKey = await startupStep("signing key", () =>
      loadSigningKey(db!, { path: config.cacheSecretKeyPath, hostname: config.cacheHostname }),
    );
    const chunking = await startupStep("content-defined chunking", () => chunkingChoice(config, db!));
    const degradedMode = config.cacheLockAllowDegradedMode ? { onDegraded: (on: boolean) => telemetry.lockDegraded(on) } : undefined;
    locker = instrumentedLocker(await startupStep("redis", () => openLocker(redisChoice(config), logger, degradedMode)), telemetry);
    const downloadLock = { locker, ttlMs: config.cacheLockDownloadTtl };
    // Known once listening (the port may be 0 until then); asked for only while serving.
    let advertised = "";
    const peers = redisChoice(config) ? new ReplicaPeers(signingKey, () => advertised) : undefined;
    const hot = new HotNarInfos();
    broadcast = await openBroadcast(redisChoice(config), "narinfo-forget", logger);
    hot.shareThrough(broadcast);
    const nars = new StoredNars({ db, store, hot, logger, tempDir: config.cacheTempPath });
    const shared = { db, nars, pool, signingKey, signNarInfo: config.cacheSignNarinfo, tempDir: config.cacheTempPath, hot, logger };
    const downloadLimits = { ...defaultDownloadLimits, minBytesPerSecond: config.cacheUpstreamNarMinRate };
    // replicas ask each other to write held access times before an eviction pass; one instance has no one to ask
    const cache = new Cache({ ...shared, priority: config.cachePriority, downloadLock, peers, broadcast: peers ? broadcast : undefined, downloadLimits, instruments: telemetry, chunking });
    telemetry.setSources({
      upstreams: () => upstreams.map((u) => ({ url: u.url, healthy: u.available })),
      storedBytes: () => db!.storedBytes(),
      storedCounts: () => db!.storedCounts(),
      maxSizeBytes: config.cacheMaxSize || undefined,
    });
    const uploads = new Uploads({
      ...shared,
      store,
      locker,
      maxUploadBytes: config.cacheMaxUploadSize,
      acceptUnverifiedCompression: config.cacheAcceptUnverifiedCompression,
      trustedUploadKeys: config.cacheRequireTrustedSignature ? trustedUploadKeys : null,
      logger,
    });
    const realisations = new Realisations({
      db,
      pool,
      signingKey,
      sign: config.cacheSignNarinfo,
      trustedUploadKeys: config.cacheRequireTrustedSignature ? trustedUploadKeys : null,
      logger,
    });
    const pins = new Pins({ db, cache, logger });
    const lru = startEviction(config, { db, nars, cache, locker, logger });
    const handle = createFetchHandler({
      cache,
      uploads,
      realisations,
      pins,
      hostname: config.cacheHostname,
      policy: { allowPut: config.cacheAllowPutVerb, allowDelete: config.cacheAllowDeleteVerb },
      auth: { getToken: config.cacheGetToken, putToken: config.cachePutToken, replica: peers && ((req) => peers.authorises(req)) },
      logger,
      observers: [
        accessLog(logger, trustedProxies),
        httpMetrics(telemetry),
        ...(config.otelEnabled ? [requestTracing(telemetry, trustedProxies)] : []),
      ],
      metricsText: observability.metricsText ?? undefined,
      status: async () => ({ version, hostname: config.cacheHostname, publicKey: cache.publicKey, ...(await telemetry.snapshot()) }),
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
        error: (err) => errorResponse(err, logger, { where: "outside the request handler" }),
        idleTimeout: 120,
        maxRequestBodySize,
      });
    } catch (err) {
      throw new StartupError(`cannot listen on ${config.serverAddr}: ${(err as Error).message}`);
    }
    const url = `http://${hostname === "0.0.0.0" ? "127.0.0.1" : hostname}:${server.port}`;
    advertised = advertiseUrl(config, { hostname, port: server.port! });
    void pool.startHealthChecks(); // once started: a failed start has nothing to say about upstreams
    void pins.warmIncomplete().catch((error: unknown) => logger.error("warming pinned closures failed", { error }));
    logger.info("ncps listening", { url, ...(peers ? { advertised } : {}), version, publicKey: cache.publicKey, upstreams: config.cacheUpstreamUrls.map(withoutCredentials), database: db.dialect });
    const openDb = db;
    const forgets = broadcast;
    return {
      url,
      port: server.port!,
      cache,
      pins,
      eviction: lru.eviction,
      publicKey: cache.publicKey,
      // Graceful, with no deadline of its own (`ncps serve` sets one): the listener closes at
      // once, responses already started run to their last byte, downloads to their commit.
      stop: async () => {
        await server.stop(false);
        pool.close();
        await pins.close();
        await cache.close();
        await lru.stop();
        await downloadLock.locker.close();
        await forgets.close();
        await openDb.close();
        await observability.shutdown();
      },
    };
  } catch (err) {
    await locker?.close().catch(() => {});
    await broadcast?.close().catch(() => {});
    await db?.close().catch(() => {});
    await observability.shutdown();
    throw err;
  }
}

/** Chunking enabled with the configured sizes (recorded at first use, refused when they
 * differ); or, disabled, the recorded sizes, with which NARs whose narinfos were written
 * while it was enabled are still chunked; or none when it never was. */
async function chunkingChoice(config: Config, db: MetadataStore): Promise<{ enabled: boolean; sizes: ChunkSizes } | undefined> {
  if (config.cacheCdcEnabled) {
    const sizes = configuredChunkSizes(config);
    await fixChunkSizes(db, sizes);
    return { enabled: true, sizes };
  }
  const recorded = await recordedChunkSizes(db);
  return recorded ? { enabled: false, sizes: recorded } : undefined;
}
