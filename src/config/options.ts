/** The one table of ncps options. Flags, environment variables, config-file keys, defaults,
 * `--help` and the README option table all come from `options` below; names follow the Go
 * ncps (kalbasit/ncps) so its users can switch without renaming anything. */
import { join } from "node:path";

export type LogLevel = "debug" | "info" | "warn" | "error";

export interface Config {
  /** The config file that was read, if any. */
  configFile?: string;
  logLevel: LogLevel;
  cacheHostname: string;
  /** Unset only when S3 storage is configured (and no local directory given). */
  cacheStorageLocal?: string;
  /** S3 storage when set; the other S3 fields then apply. */
  cacheStorageS3Bucket?: string;
  cacheStorageS3Endpoint?: string;
  cacheStorageS3Region?: string;
  cacheStorageS3AccessKeyId?: string;
  cacheStorageS3SecretAccessKey?: string;
  /** Unset means false. */
  cacheStorageS3ForcePathStyle?: boolean;
  cacheStorageS3Prefix?: string;
  cacheDatabaseUrl: string;
  /** 0: the engine's default (25 open, 5 idle for PostgreSQL and MySQL). */
  cacheDatabasePoolMaxOpenConns: number;
  cacheDatabasePoolMaxIdleConns: number;
  cacheDatabaseAutoMigrate: boolean;
  cacheRedisAddrs: string[];
  cacheRedisUsername?: string;
  cacheRedisPassword?: string;
  cacheRedisDb: number;
  cacheRedisUseTls: boolean;
  cacheLockRedisKeyPrefix: string;
  /** With Redis unreachable, take locks in-process instead of failing. */
  cacheLockAllowDegradedMode: boolean;
  /** Milliseconds. */
  cacheLockDownloadTtl: number;
  /** The URL other replicas reach this one at; unset: derived from the host name and the port. */
  cacheAdvertiseUrl?: string;
  /** Bytes the stored NARs may take; unset or 0: no cap. */
  cacheMaxSize?: number;
  /** When the LRU eviction also runs (cron or `@every`); see src/config/schedule.ts. */
  cacheLruSchedule?: string;
  cacheLruScheduleTimezone?: string;
  /** Milliseconds: how long the eviction lock outlives a replica that died holding it. */
  cacheLockLruTtl: number;
  cacheTempPath: string;
  /** Store new NARs as content-defined chunks (deduplicated across NARs). */
  cacheCdcEnabled: boolean;
  /** Chunk sizes in bytes; recorded in the database at first use, fixed after. */
  cacheCdcMin: number;
  cacheCdcAvg: number;
  cacheCdcMax: number;
  /** Milliseconds: `ncps fsck` leaves unrecorded blobs younger than this alone. */
  fsckStrayGrace: number;
  cacheSecretKeyPath?: string;
  cacheSignNarinfo: boolean;
  /** Accept bzip2, lzip and lz4 NARs on FileHash alone (ncps cannot check their NarHash). */
  cacheAcceptUnverifiedCompression: boolean;
  /** nix-cache-info `Priority` (lower is preferred by Nix; cache.nixos.org says 40). */
  cachePriority: number;
  cacheUpstreamUrls: string[];
  cacheUpstreamPublicKeys: string[];
  /** Milliseconds. */
  cacheUpstreamDialerTimeout: number;
  /** Milliseconds. */
  cacheUpstreamResponseHeaderTimeout: number;
  /** Milliseconds an upstream 404 is remembered; 0 disables. */
  cacheUpstreamNegativeTtl: number;
  /** Upstream URLs (as in cacheUpstreamUrls) whose narinfos are used without a trusted signature. */
  cacheUpstreamAcceptUnsigned: string[];
  /** Origins besides each upstream's own from which NARs (and redirects) may be fetched. */
  cacheUpstreamNarOrigins: string[];
  /** `UPSTREAM_URL=PROXY_URL`: the proxy each named upstream is reached through. */
  cacheUpstreamProxies: string[];
  /** Bytes per second a NAR download must average over a minute; 0 disables. */
  cacheUpstreamNarMinRate: number;
  netrcFile?: string;
  serverAddr: string;
  /** Milliseconds responses and downloads in flight get to finish after SIGTERM/SIGINT. */
  serverShutdownTimeout: number;
  cacheAllowPutVerb: boolean;
  cacheAllowDeleteVerb: boolean;
  /** Bytes. */
  cacheMaxUploadSize: number;
  cacheRequireTrustedSignature: boolean;
  cacheTrustedUploadKeys: string[];
  cacheGetToken?: string;
  cachePutToken?: string;
  /** Serve GET /metrics (Prometheus text format), open like /healthz. */
  prometheusEnabled: boolean;
  /** Traces and metrics over OTLP/gRPC to otelGrpcUrl, or printed to stdout without one. */
  otelEnabled: boolean;
  otelGrpcUrl?: string;
  /** Addresses or CIDR ranges whose X-Forwarded-For names the client (access log, traces). */
  serverTrustedProxies: string[];
}

/** "integer", "duration" (Go syntax, held as milliseconds) and "size" (bytes; "10G",
 * "512M", "1.5T" or a plain number) are numbers in `Config`. */
export type OptionType = "string" | "string[]" | "boolean" | "integer" | "duration" | "size";

/** What a default may depend on: the environment and the machine, never the real process
 * directly, so tests can pose as another user or host. */
export interface DefaultsContext {
  env: Record<string, string | undefined>;
  isRoot: boolean;
  homeDir: string;
  hostname: string;
  tmpDir: string;
  fileExists(path: string): boolean;
}

type DefaultFn = (ctx: DefaultsContext, resolved: Partial<Config>) => unknown;

export interface OptionSpec {
  key: keyof Config;
  /** Long flag name without the dashes. */
  flag: string;
  /** Environment variables, the first one is the documented name. */
  env: string[];
  /** Dotted path in the config file; absent for `--config` itself. */
  configKey?: string;
  type: OptionType;
  /** Typed value, or computed from the environment and the options resolved before this one
   * (the table order matters: storage before database URL, upstream URLs before keys). */
  default?: unknown | DefaultFn;
  /** How the default reads in --help and the README when it is computed. */
  defaultText?: string;
  /** Accepted values, for an enumeration stored as a string. */
  choices?: readonly string[];
  /** Other spellings accepted for a choice (the Go ncps's zerolog level names). */
  choiceAliases?: Readonly<Record<string, string>>;
  help: string;
  /** "fsck": offered by `ncps fsck` only, never by `serve`. */
  group: "general" | "cache" | "upstream" | "server" | "fsck";
  /** Also accepted by `ncps migrate ...` (every command reads every source, but only these
   * flags are offered there). */
  shared?: boolean;
  /** Deprecated spellings, still honoured with a warning. */
  deprecated?: { flags?: string[]; env?: string[]; configKeys?: string[] };
}

export const defaultUpstreamUrl = "https://cache.nixos.org";
export const defaultUpstreamPublicKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

export const logLevels: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** Where the config file is looked for when neither --config nor NCPS_CONFIG_FILE names one. */
export function defaultConfigFile(ctx: DefaultsContext): string {
  const configHome = ctx.env.XDG_CONFIG_HOME || join(ctx.homeDir, ".config");
  return join(configHome, "ncps", "config.yaml");
}

/** The default home of the cache's data: local storage, and the SQLite database also with S3 storage. */
function defaultDataDir(ctx: DefaultsContext): string {
  return ctx.isRoot ? "/var/lib/ncps" : join(ctx.env.XDG_DATA_HOME || join(ctx.homeDir, ".local", "share"), "ncps");
}

const table = [
  {
    key: "configFile",
    flag: "config",
    env: ["NCPS_CONFIG_FILE"],
    type: "string",
    default: (ctx: DefaultsContext) => defaultConfigFile(ctx),
    defaultText: "$XDG_CONFIG_HOME/ncps/config.yaml, read only if it exists",
    help: "Config file (.yaml, .yml, .toml or .json)",
    group: "general",
    shared: true,
  },
  {
    key: "logLevel",
    flag: "log-level",
    env: ["LOG_LEVEL"],
    configKey: "log.level",
    type: "string",
    default: "info",
    choices: logLevels,
    choiceAliases: { trace: "debug", warning: "warn", fatal: "error", panic: "error" },
    help: "Log level: debug, info, warn or error",
    group: "general",
    shared: true,
  },
  {
    key: "cacheHostname",
    flag: "cache-hostname",
    env: ["CACHE_HOSTNAME"],
    configKey: "cache.hostname",
    type: "string",
    default: (ctx: DefaultsContext) => ctx.hostname,
    defaultText: "the machine's host name",
    help: "Host name of this cache; names its signing key",
    group: "cache",
  },
  // S3 storage comes before the local directory: the directory's default depends on it.
  // No defaults here, so an unset S3 option stays out of the Config.
  {
    key: "cacheStorageS3Bucket",
    flag: "cache-storage-s3-bucket",
    env: ["CACHE_STORAGE_S3_BUCKET"],
    configKey: "cache.storage.s3.bucket",
    type: "string",
    help: "S3 bucket for NARs and logs, instead of --cache-storage-local",
    group: "cache",
  },
  {
    key: "cacheStorageS3Endpoint",
    flag: "cache-storage-s3-endpoint",
    env: ["CACHE_STORAGE_S3_ENDPOINT"],
    configKey: "cache.storage.s3.endpoint",
    type: "string",
    help: "S3 endpoint URL with its scheme (https://s3.eu-west-1.amazonaws.com, http://minio:9000)",
    group: "cache",
  },
  {
    key: "cacheStorageS3Region",
    flag: "cache-storage-s3-region",
    env: ["CACHE_STORAGE_S3_REGION"],
    configKey: "cache.storage.s3.region",
    type: "string",
    defaultText: "us-east-1",
    help: "S3 region (self-hosted servers accept any)",
    group: "cache",
  },
  {
    key: "cacheStorageS3AccessKeyId",
    flag: "cache-storage-s3-access-key-id",
    env: ["CACHE_STORAGE_S3_ACCESS_KEY_ID"],
    configKey: "cache.storage.s3.access-key-id",
    type: "string",
    help: "S3 access key ID; with neither key given, credentials come from the AWS chain (environment, AWS_PROFILE, web identity, container or instance role)",
    group: "cache",
  },
  {
    key: "cacheStorageS3SecretAccessKey",
    flag: "cache-storage-s3-secret-access-key",
    env: ["CACHE_STORAGE_S3_SECRET_ACCESS_KEY"],
    configKey: "cache.storage.s3.secret-access-key",
    type: "string",
    help: "S3 secret access key (give both keys or neither)",
    group: "cache",
  },
  {
    key: "cacheStorageS3ForcePathStyle",
    flag: "cache-storage-s3-force-path-style",
    env: ["CACHE_STORAGE_S3_FORCE_PATH_STYLE"],
    configKey: "cache.storage.s3.force-path-style",
    type: "boolean",
    defaultText: "false",
    help: "Path-style S3 URLs (endpoint/bucket/key), needed by MinIO, Garage and most self-hosted servers",
    group: "cache",
  },
  {
    // Not in the Go ncps: lets several caches share one bucket.
    key: "cacheStorageS3Prefix",
    flag: "cache-storage-s3-prefix",
    env: ["CACHE_STORAGE_S3_PREFIX"],
    configKey: "cache.storage.s3.prefix",
    type: "string",
    help: "Key prefix in the S3 bucket (objects go under <prefix>/)",
    group: "cache",
  },
  {
    key: "cacheStorageLocal",
    flag: "cache-storage-local",
    env: ["CACHE_STORAGE_LOCAL"],
    configKey: "cache.storage.local",
    type: "string",
    // with S3 storage there is no local storage directory unless one is given (an error)
    default: (ctx: DefaultsContext, resolved: Partial<Config>) =>
      resolved.cacheStorageS3Bucket === undefined ? defaultDataDir(ctx) : undefined,
    defaultText: "/var/lib/ncps as root, else $XDG_DATA_HOME/ncps (~/.local/share/ncps); none with S3 storage",
    help: "Directory for the cache's data (NARs, narinfos, the SQLite database)",
    group: "cache",
    shared: true,
    deprecated: { flags: ["cache-data-path"], env: ["CACHE_DATA_PATH"], configKeys: ["cache.data-path"] },
  },
  {
    key: "cacheDatabaseUrl",
    flag: "cache-database-url",
    env: ["CACHE_DATABASE_URL"],
    configKey: "cache.database-url",
    type: "string",
    default: (ctx: DefaultsContext, resolved: Partial<Config>) =>
      `sqlite:${join(resolved.cacheStorageLocal ?? defaultDataDir(ctx), "db", "db.sqlite")}`,
    defaultText: "sqlite:<cache-storage-local>/db/db.sqlite (with S3 storage: the default data directory)",
    help: "Database URL: sqlite:PATH, postgres://... or mysql://...",
    group: "cache",
    shared: true,
    // the Go ncps's `migrate` reads this spelling, its other commands the one above
    deprecated: { configKeys: ["cache.database.url"] },
  },
  {
    key: "cacheDatabasePoolMaxOpenConns",
    flag: "cache-database-pool-max-open-conns",
    env: ["CACHE_DATABASE_POOL_MAX_OPEN_CONNS"],
    configKey: "cache.database.pool.max-open-conns",
    type: "integer",
    default: 0,
    defaultText: "0 (PostgreSQL and MySQL: 25)",
    help: "Maximum open connections to a PostgreSQL or MySQL database (0: the default)",
    group: "cache",
    shared: true,
  },
  {
    key: "cacheDatabasePoolMaxIdleConns",
    flag: "cache-database-pool-max-idle-conns",
    env: ["CACHE_DATABASE_POOL_MAX_IDLE_CONNS"],
    configKey: "cache.database.pool.max-idle-conns",
    type: "integer",
    default: 0,
    defaultText: "0 (PostgreSQL and MySQL: 5)",
    help: "Maximum idle connections kept in the PostgreSQL or MySQL pool (0: the default)",
    group: "cache",
    shared: true,
  },
  {
    key: "cacheDatabaseAutoMigrate",
    // Not in the Go ncps, whose users meet "no such table" when they forget `migrate up`.
    flag: "cache-database-auto-migrate",
    env: ["CACHE_DATABASE_AUTO_MIGRATE"],
    configKey: "cache.database.auto-migrate",
    type: "boolean",
    default: true,
    help: "Apply pending database migrations when serve, import-go, migrate-nar-to-chunks or migrate-chunks-to-nar start; with --no-cache-database-auto-migrate, they refuse to start on an out-of-date schema (run `ncps migrate up`)",
    group: "cache",
  },
  {
    key: "cacheRedisAddrs",
    flag: "cache-redis-addrs",
    env: ["CACHE_REDIS_ADDRS"],
    configKey: "cache.redis.addrs",
    type: "string[]",
    default: [],
    help: "Redis host:port for replicas sharing one database and storage: one upstream download per NAR across all of them. Several addresses are independent Redis servers (not a Sentinel set or a Cluster), and a lock is held on a majority of them (Redlock, as in the Go ncps)",
    group: "cache",
  },
  {
    key: "cacheRedisUsername",
    flag: "cache-redis-username",
    env: ["CACHE_REDIS_USERNAME"],
    configKey: "cache.redis.username",
    type: "string",
    help: "Redis username (ACL)",
    group: "cache",
  },
  {
    key: "cacheRedisPassword",
    flag: "cache-redis-password",
    env: ["CACHE_REDIS_PASSWORD"],
    configKey: "cache.redis.password",
    type: "string",
    help: "Redis password",
    group: "cache",
  },
  {
    key: "cacheRedisDb",
    flag: "cache-redis-db",
    env: ["CACHE_REDIS_DB"],
    configKey: "cache.redis.db",
    type: "integer",
    default: 0,
    help: "Redis database number",
    group: "cache",
  },
  {
    key: "cacheRedisUseTls",
    flag: "cache-redis-use-tls",
    env: ["CACHE_REDIS_USE_TLS"],
    configKey: "cache.redis.use-tls",
    type: "boolean",
    default: false,
    help: "Connect to Redis over TLS",
    group: "cache",
  },
  {
    key: "cacheLockRedisKeyPrefix",
    flag: "cache-lock-redis-key-prefix",
    env: ["CACHE_LOCK_REDIS_KEY_PREFIX"],
    configKey: "cache.lock.redis.key-prefix",
    type: "string",
    default: "ncps:lock:",
    help: "Prefix of ncps's lock keys in Redis (to share one Redis between caches)",
    group: "cache",
  },
  {
    key: "cacheLockAllowDegradedMode",
    flag: "cache-lock-allow-degraded-mode",
    env: ["CACHE_LOCK_ALLOW_DEGRADED_MODE"],
    configKey: "cache.lock.allow-degraded-mode",
    type: "boolean",
    default: false,
    help: "With Redis unreachable (at start or later), take locks in this process only, with a warning and ncps_lock_degraded at 1, instead of failing requests; Redis is asked again every 5 s and used again once it answers. Replicas may then download a NAR twice",
    group: "cache",
  },
  {
    key: "cacheLockDownloadTtl",
    flag: "cache-lock-download-ttl",
    env: ["CACHE_LOCK_DOWNLOAD_TTL"],
    configKey: "cache.lock.download-lock-ttl",
    type: "duration",
    default: 5 * 60_000,
    help: "How long a replica's claim on a NAR download outlives the replica (renewed while it runs)",
    group: "cache",
    deprecated: { configKeys: ["cache.lock.download-ttl"] },
  },
  {
    // Not in the Go ncps: its replicas do not stream in-flight NARs from each other.
    key: "cacheAdvertiseUrl",
    flag: "cache-advertise-url",
    env: ["CACHE_ADVERTISE_URL"],
    configKey: "cache.advertise-url",
    type: "string",
    defaultText: "http://<the --server-addr host, or the machine's host name when it listens on all addresses>:<port>",
    help: "With --cache-redis-addrs: the http(s)://host:port other replicas reach this one at, to stream a NAR it is downloading",
    group: "cache",
  },
  {
    key: "cacheLockLruTtl",
    flag: "cache-lock-lru-ttl",
    env: ["CACHE_LOCK_LRU_TTL"],
    configKey: "cache.lock.lru-lock-ttl",
    type: "duration",
    default: 30 * 60_000,
    help: "How long the LRU eviction lock outlives a replica that died holding it (renewed while a pass runs)",
    group: "cache",
  },
  {
    key: "cacheMaxSize",
    flag: "cache-max-size",
    env: ["CACHE_MAX_SIZE"],
    configKey: "cache.max-size",
    type: "size",
    help: "Most bytes the stored NARs may take, like 100G; past it the least recently used go (unset or 0: no cap)",
    group: "cache",
  },
  {
    key: "cacheLruSchedule",
    flag: "cache-lru-schedule",
    env: ["CACHE_LRU_SCHEDULE"],
    configKey: "cache.lru.schedule",
    type: "string",
    help: "Also run the LRU eviction on this schedule: 5-field cron (\"0 2 * * *\"), @daily-style, or @every 1h. Without one it runs when the cap is passed",
    group: "cache",
  },
  {
    key: "cacheLruScheduleTimezone",
    flag: "cache-lru-schedule-timezone",
    env: ["CACHE_LRU_SCHEDULE_TZ"],
    configKey: "cache.lru.timezone",
    type: "string",
    help: "IANA time zone of --cache-lru-schedule, like Europe/Berlin (default: the machine's)",
    group: "cache",
  },
  {
    key: "cacheTempPath",
    flag: "cache-temp-path",
    env: ["CACHE_TEMP_PATH"],
    configKey: "cache.temp-path",
    type: "string",
    default: (ctx: DefaultsContext) => ctx.tmpDir,
    defaultText: "$TMPDIR or /tmp",
    help: "Directory for NARs being downloaded",
    group: "cache",
  },
  {
    key: "cacheCdcEnabled",
    flag: "cache-cdc-enabled",
    env: ["CACHE_CDC_ENABLED"],
    configKey: "cache.cdc.enabled",
    type: "boolean",
    default: false,
    help: "Store new NARs as content-defined chunks, each stored once however many NARs share it (narinfos then say Compression: none). Chunked NARs stay servable when turned off",
    group: "cache",
  },
  {
    key: "cacheCdcMin",
    flag: "cache-cdc-min",
    env: ["CACHE_CDC_MIN"],
    configKey: "cache.cdc.min",
    type: "integer",
    default: 16_384,
    help: "Smallest chunk in bytes. The sizes are recorded in the database when CDC is first enabled; a start with other sizes is refused",
    group: "cache",
  },
  {
    key: "cacheCdcAvg",
    flag: "cache-cdc-avg",
    env: ["CACHE_CDC_AVG"],
    configKey: "cache.cdc.avg",
    type: "integer",
    default: 65_536,
    help: "Average (target) chunk size in bytes",
    group: "cache",
  },
  {
    key: "cacheCdcMax",
    flag: "cache-cdc-max",
    env: ["CACHE_CDC_MAX"],
    configKey: "cache.cdc.max",
    type: "integer",
    default: 262_144,
    help: "Largest chunk in bytes",
    group: "cache",
  },
  {
    // As the Go ncps's fsck grace (--dechunk-residue-grace): flag without the cache- prefix.
    key: "fsckStrayGrace",
    flag: "stray-grace",
    env: ["CACHE_FSCK_STRAY_GRACE"],
    configKey: "cache.fsck.stray-grace",
    type: "duration",
    default: 24 * 3_600_000,
    help: "fsck: a blob in storage without a record is reported (and removed by --repair) only once it is this old: an uploaded NAR waits for its narinfo",
    group: "fsck",
  },
  {
    key: "cacheSecretKeyPath",
    flag: "cache-secret-key-path",
    env: ["CACHE_SECRET_KEY_PATH"],
    configKey: "cache.secret-key-path",
    type: "string",
    defaultText: "a key generated once and kept in the database",
    help: "Nix secret key file used to sign narinfos",
    group: "cache",
  },
  {
    key: "cacheSignNarinfo",
    flag: "cache-sign-narinfo",
    env: ["CACHE_SIGN_NARINFO"],
    configKey: "cache.sign-narinfo",
    type: "boolean",
    default: true,
    help: "Sign narinfos with this cache's key (else pass upstream signatures through)",
    group: "cache",
  },
  {
    key: "cacheAcceptUnverifiedCompression",
    // Not in the Go ncps. FileHash is unsigned, so without a decoder any bytes matching it
    // would be stored and re-signed as the signed NarHash's NAR: off unless asked for.
    flag: "cache-accept-unverified-compression",
    env: ["CACHE_ACCEPT_UNVERIFIED_COMPRESSION"],
    configKey: "cache.accept-unverified-compression",
    type: "boolean",
    default: false,
    help: "Accept bzip2, lzip and lz4 NARs (upstream or uploaded) on their unsigned FileHash alone: ncps cannot decompress them to check NarHash",
    group: "cache",
  },
  {
    key: "cachePriority",
    flag: "cache-priority",
    env: ["CACHE_PRIORITY"],
    configKey: "cache.priority",
    type: "integer",
    default: 10,
    help: "Priority announced in /nix-cache-info (lower is preferred; cache.nixos.org is 40)",
    group: "cache",
  },
  {
    key: "cacheUpstreamUrls",
    flag: "cache-upstream-url",
    env: ["CACHE_UPSTREAM_URLS"],
    configKey: "cache.upstream.urls",
    type: "string[]",
    default: [defaultUpstreamUrl],
    help: "Upstream cache URL (http or https); `?priority=N` ranks it as in the Go ncps (lower first, over its nix-cache-info Priority; not sent upstream); repeat the flag for several",
    group: "upstream",
    deprecated: { flags: ["upstream-cache"], env: ["UPSTREAM_CACHES"], configKeys: ["cache.upstream.caches"] },
  },
  {
    key: "cacheUpstreamPublicKeys",
    flag: "cache-upstream-public-key",
    env: ["CACHE_UPSTREAM_PUBLIC_KEYS"],
    configKey: "cache.upstream.public-keys",
    type: "string[]",
    default: (_ctx: DefaultsContext, resolved: Partial<Config>) =>
      sameList(resolved.cacheUpstreamUrls, [defaultUpstreamUrl]) ? [defaultUpstreamPublicKey] : [],
    defaultText: `${defaultUpstreamPublicKey} when the upstream list is the default, else none`,
    help: "Trusted upstream signing key name:base64; repeat the flag for several",
    group: "upstream",
    deprecated: { flags: ["upstream-public-key"], env: ["UPSTREAM_PUBLIC_KEYS"] },
  },
  {
    key: "cacheUpstreamDialerTimeout",
    flag: "cache-upstream-dialer-timeout",
    env: ["CACHE_UPSTREAM_DIALER_TIMEOUT"],
    configKey: "cache.upstream.dialer-timeout",
    type: "duration",
    default: 3_000,
    help: "Timeout for connecting to an upstream",
    group: "upstream",
    deprecated: { flags: ["upstream-dialer-timeout"], env: ["UPSTREAM_DIALER_TIMEOUT"] },
  },
  {
    key: "cacheUpstreamResponseHeaderTimeout",
    flag: "cache-upstream-response-header-timeout",
    env: ["CACHE_UPSTREAM_RESPONSE_HEADER_TIMEOUT"],
    configKey: "cache.upstream.response-header-timeout",
    type: "duration",
    default: 3_000,
    help: "Timeout for an upstream's response headers",
    group: "upstream",
    deprecated: { flags: ["upstream-response-header-timeout"], env: ["UPSTREAM_RESPONSE_HEADER_TIMEOUT"] },
  },
  {
    key: "cacheUpstreamNegativeTtl",
    // Not in the Go ncps. One minute spares the upstreams the narinfo lookups a fleet repeats
    // for paths no cache has (local builds), yet a path that appears upstream is seen soon.
    flag: "cache-upstream-negative-ttl",
    env: ["CACHE_UPSTREAM_NEGATIVE_TTL"],
    configKey: "cache.upstream.negative-ttl",
    type: "duration",
    default: 60_000,
    help: "How long an upstream 404 is remembered (0 disables)",
    group: "upstream",
  },
  {
    key: "cacheUpstreamAcceptUnsigned",
    // Not in the Go ncps: nix-binary-cache's `require-sigs = false`, for named upstreams only.
    flag: "cache-upstream-accept-unsigned",
    env: ["CACHE_UPSTREAM_ACCEPT_UNSIGNED"],
    configKey: "cache.upstream.accept-unsigned",
    type: "string[]",
    default: [],
    help: "An upstream URL (one of --cache-upstream-url; its user and password need not be repeated) whose narinfos are used without a trusted signature: its NARs are still checked against the narinfo's hashes, but ncps then signs what it serves with its own key (see Unsigned upstreams); repeat for several",
    group: "upstream",
  },
  {
    key: "cacheUpstreamNarOrigins",
    // Not in the Go ncps. A narinfo's URL is not signed: without this list it could make ncps
    // fetch any host (an internal service) for any upstream.
    flag: "cache-upstream-nar-origin",
    env: ["CACHE_UPSTREAM_NAR_ORIGINS"],
    configKey: "cache.upstream.nar-origins",
    type: "string[]",
    default: [],
    help: "Extra origin (e.g. https://cdn.example.org) from which NARs and upstream redirects may be fetched; by default only each upstream's own origin; repeat the flag for several",
    group: "upstream",
  },
  {
    key: "cacheUpstreamProxies",
    // Not in the Go ncps, which (like Bun's fetch) only reads HTTP_PROXY, HTTPS_PROXY and
    // NO_PROXY for every upstream at once. nix-binary-cache offers a proxy per upstream.
    flag: "cache-upstream-proxy",
    env: ["CACHE_UPSTREAM_PROXIES"],
    configKey: "cache.upstream.proxies",
    type: "string[]",
    default: [],
    help: "UPSTREAM_URL=PROXY_URL: reach that upstream (one of --cache-upstream-url) through an http://, https://, socks5:// or socks5h:// proxy ([user:password@]host:port); every request for it goes there, health checks and NARs from --cache-upstream-nar-origin included; repeat for several. Upstreams without one use HTTP_PROXY/HTTPS_PROXY/NO_PROXY",
    group: "upstream",
  },
  {
    key: "cacheUpstreamNarMinRate",
    // Not in the Go ncps. 1K/s over a minute: far below any real link, yet a body trickling
    // just fast enough to dodge the stall timeout cannot hold a download (or shutdown) forever.
    flag: "cache-upstream-nar-min-rate",
    env: ["CACHE_UPSTREAM_NAR_MIN_RATE"],
    configKey: "cache.upstream.nar-min-rate",
    type: "size",
    default: 1024,
    help: "A NAR download averaging fewer bytes per second than this over a minute is abandoned (0 disables)",
    group: "upstream",
  },
  {
    key: "netrcFile",
    flag: "netrc-file",
    env: ["NETRC_FILE"],
    configKey: "cache.netrc-file",
    type: "string",
    default: (ctx: DefaultsContext) => {
      const path = join(ctx.homeDir, ".netrc");
      return ctx.fileExists(path) ? path : undefined;
    },
    defaultText: "~/.netrc if it exists",
    help: "netrc file with upstream credentials",
    group: "upstream",
  },
  {
    key: "serverAddr",
    flag: "server-addr",
    env: ["SERVER_ADDR"],
    configKey: "server.addr",
    type: "string",
    default: ":8501",
    help: "Address to listen on: host:port or :port",
    group: "server",
  },
  {
    // Not in the Go ncps. Below the units' TimeoutStopSec (45s), so ncps ends it, not SIGKILL.
    key: "serverShutdownTimeout",
    flag: "server-shutdown-timeout",
    env: ["SERVER_SHUTDOWN_TIMEOUT"],
    configKey: "server.shutdown-timeout",
    type: "duration",
    default: 30_000,
    help: "On SIGTERM or SIGINT: how long responses and upstream downloads in flight may take to finish before ncps stops anyway (a second signal stops at once)",
    group: "server",
  },
  {
    key: "cacheAllowPutVerb",
    flag: "cache-allow-put-verb",
    env: ["CACHE_ALLOW_PUT_VERB"],
    configKey: "cache.allow-put-verb",
    type: "boolean",
    default: false,
    help: "Accept uploads: PUT of narinfos, NARs and build logs (what `nix copy --to` sends)",
    group: "cache",
  },
  {
    key: "cacheAllowDeleteVerb",
    flag: "cache-allow-delete-verb",
    env: ["CACHE_ALLOW_DELETE_VERB"],
    configKey: "cache.allow-delete-verb",
    type: "boolean",
    default: false,
    help: "Accept DELETE of narinfos and NARs",
    group: "cache",
  },
  {
    key: "cacheMaxUploadSize",
    // Not in the Go ncps: without a bound, one client can fill the disk with one request.
    flag: "cache-max-upload-size",
    env: ["CACHE_MAX_UPLOAD_SIZE"],
    configKey: "cache.max-upload-size",
    type: "size",
    default: 64 * 2 ** 30,
    help: "Largest accepted upload body (a NAR or a log); larger ones get 413",
    group: "cache",
  },
  {
    key: "cacheRequireTrustedSignature",
    flag: "cache-require-trusted-signature",
    env: ["CACHE_REQUIRE_TRUSTED_SIGNATURE"],
    configKey: "cache.require-trusted-signature",
    type: "boolean",
    default: false,
    help: "Refuse (403) an uploaded narinfo without a valid signature by a --cache-trusted-upload-key",
    group: "cache",
  },
  {
    key: "cacheTrustedUploadKeys",
    flag: "cache-trusted-upload-key",
    env: ["CACHE_TRUSTED_UPLOAD_KEYS"],
    configKey: "cache.trusted-upload-keys",
    type: "string[]",
    default: [],
    help: "Public key (name:base64) whose signature an upload must carry; repeat for several",
    group: "cache",
  },
  {
    key: "cacheGetToken",
    flag: "cache-get-token",
    env: ["CACHE_GET_TOKEN"],
    configKey: "cache.get-token",
    type: "string",
    help: "When set, reads need `Authorization: Bearer <token>` or the token as HTTP Basic password (netrc); /healthz stays open",
    group: "server",
  },
  {
    key: "cachePutToken",
    flag: "cache-put-token",
    env: ["CACHE_PUT_TOKEN"],
    configKey: "cache.put-token",
    type: "string",
    help: "When set, uploads and deletes need this token (Bearer or Basic password)",
    group: "server",
  },
  {
    key: "prometheusEnabled",
    flag: "prometheus-enabled",
    env: ["PROMETHEUS_ENABLED"],
    configKey: "prometheus.enabled",
    type: "boolean",
    default: false,
    help: "Serve Prometheus metrics at /metrics (open, like /healthz)",
    group: "general",
  },
  {
    key: "otelEnabled",
    flag: "otel-enabled",
    env: ["OTEL_ENABLED"],
    configKey: "opentelemetry.enabled",
    type: "boolean",
    default: false,
    help: "Export OpenTelemetry traces and metrics (to --otel-grpc-url, else to stdout)",
    group: "general",
  },
  {
    key: "otelGrpcUrl",
    flag: "otel-grpc-url",
    env: ["OTEL_GRPC_URL"],
    configKey: "opentelemetry.grpc-url",
    type: "string",
    help: "OpenTelemetry collector gRPC URL; http:// is plaintext, https:// (or no scheme) TLS. Omit to print to stdout",
    group: "general",
  },
  {
    // Not in the Go ncps: without it a client could name any address in X-Forwarded-For.
    key: "serverTrustedProxies",
    flag: "server-trusted-proxy",
    env: ["SERVER_TRUSTED_PROXIES"],
    configKey: "server.trusted-proxies",
    type: "string[]",
    default: [],
    help: "Address or CIDR range of a proxy whose X-Forwarded-For names the client in logs and traces; repeat for several",
    group: "server",
  },
] satisfies OptionSpec[];

export const options: readonly OptionSpec[] = table;

/** A Go ncps option this ncps accepts but does not implement. Set anywhere (flag, config
 * key or environment variable, by any command), it costs one warning line at start saying
 * what ncps does instead; never an exit, so a Go ncps command line, config file or env file
 * starts this ncps unchanged. Flags are accepted by every command and kept out of `--help`;
 * the README lists them. */
export interface GoOnlyOption {
  flag: string;
  env: string[];
  configKey?: string;
  type: OptionType;
  /** What ncps does instead: the second half of the warning, and the README's description. */
  instead: string;
}

const noLazyCdc = "ncps chunks a NAR on the verification thread while it is verified, before it is recorded: there is no lazy, background chunking to tune";
const noStaging = "a NAR downloading on another replica is streamed from that replica as it downloads (see Replicas); no staging objects are written";
const lockRetry = "ncps waits for a taken Redis lock with a fixed, jittered exponential backoff: nothing to tune";

export const goOnlyOptions: readonly GoOnlyOption[] = [
  { flag: "analytics-reporting-enabled", env: ["ANALYTICS_REPORTING_ENABLED"], configKey: "analytics.reporting.enabled", type: "boolean", instead: "ncps reports no usage statistics to anyone" },
  { flag: "analytics-reporting-samples", env: [], type: "boolean", instead: "ncps reports no usage statistics to anyone" },
  { flag: "log-console-writer-enabled", env: [], type: "boolean", instead: "ncps logs one JSON object per line on stderr (pipe it through `jq` to read it)" },
  { flag: "log-console-writer-prefix", env: [], type: "string", instead: "ncps logs one JSON object per line on stderr, without a prefix" },
  { flag: "xz-binary-path", env: ["XZ_BINARY_PATH"], configKey: "xz-binary-path", type: "string", instead: "ncps decompresses xz in process (xz-embedded in WebAssembly, built into the binary), with no external binary" },
  { flag: "use-xz-binary", env: ["USE_XZ_BINARY"], configKey: "use-xz-binary", type: "boolean", instead: "ncps decompresses xz in process (xz-embedded in WebAssembly, built into the binary), with no external binary" },
  { flag: "pprof-addr", env: ["PPROF_ADDR"], configKey: "pprof.addr", type: "string", instead: "ncps has no pprof endpoint; profile with `bun --inspect` or read --prometheus-enabled metrics" },
  { flag: "cache-cdc-lazy-chunking-enabled", env: ["CACHE_CDC_LAZY_CHUNKING_ENABLED"], configKey: "cache.cdc.lazy-chunking-enabled", type: "boolean", instead: noLazyCdc },
  { flag: "cache-cdc-background-workers", env: ["CACHE_CDC_BACKGROUND_WORKERS"], configKey: "cache.cdc.background-workers", type: "integer", instead: noLazyCdc },
  { flag: "cache-cdc-delete-delay", env: ["CACHE_CDC_DELETE_DELAY"], configKey: "cache.cdc.delete-delay", type: "duration", instead: "ncps migrate-nar-to-chunks removes a whole NAR once its chunks are recorded and verified against its NarHash" },
  { flag: "cache-cdc-lazy-recovery-schedule", env: ["CACHE_CDC_LAZY_RECOVERY_SCHEDULE"], configKey: "cache.cdc.lazy-recovery-schedule", type: "string", instead: noLazyCdc },
  { flag: "cache-cdc-lazy-recovery-batch-size", env: ["CACHE_CDC_LAZY_RECOVERY_BATCH_SIZE"], configKey: "cache.cdc.lazy-recovery-batch-size", type: "integer", instead: noLazyCdc },
  { flag: "cache-cdc-lazy-cleanup-schedule", env: ["CACHE_CDC_LAZY_CLEANUP_SCHEDULE"], configKey: "cache.cdc.lazy-cleanup-schedule", type: "string", instead: noLazyCdc },
  { flag: "cache-cdc-chunk-wait-timeout", env: ["CACHE_CDC_CHUNK_WAIT_TIMEOUT"], configKey: "cache.cdc.chunk-wait-timeout", type: "duration", instead: "a NAR being downloaded is served from its download, never from chunks still being written: there is nothing to wait for" },
  { flag: "dechunk-residue-grace", env: ["CACHE_FSCK_DECHUNK_RESIDUE_GRACE"], configKey: "cache.fsck.dechunk-residue-grace", type: "duration", instead: "fsck's grace for blobs without a record is --stray-grace (for chunk blobs, at least the hour a commit may take to record them)" },
  { flag: "cache-redis-pool-size", env: ["CACHE_REDIS_POOL_SIZE"], configKey: "cache.redis.pool-size", type: "integer", instead: "ncps keeps one Redis connection per process (lock commands are short)" },
  { flag: "cache-lock-backend", env: ["CACHE_LOCK_BACKEND"], configKey: "cache.lock.backend", type: "string", instead: "ncps locks through Redis exactly when --cache-redis-addrs is set, in process otherwise" },
  { flag: "cache-lock-retry-max-attempts", env: ["CACHE_LOCK_RETRY_MAX_ATTEMPTS"], configKey: "cache.lock.retry.max-attempts", type: "integer", instead: lockRetry },
  { flag: "cache-lock-retry-initial-delay", env: ["CACHE_LOCK_RETRY_INITIAL_DELAY"], configKey: "cache.lock.retry.initial-delay", type: "duration", instead: lockRetry },
  { flag: "cache-lock-retry-max-delay", env: ["CACHE_LOCK_RETRY_MAX_DELAY"], configKey: "cache.lock.retry.max-delay", type: "duration", instead: lockRetry },
  { flag: "cache-lock-retry-jitter", env: ["CACHE_LOCK_RETRY_JITTER"], configKey: "cache.lock.retry.jitter", type: "boolean", instead: lockRetry },
  { flag: "cache-download-poll-timeout", env: ["CACHE_DOWNLOAD_POLL_TIMEOUT"], configKey: "cache.download.poll-timeout", type: "duration", instead: "a replica waiting on another's download streams it from that replica, else waits for as long as that replica's claim lives (renewed while it downloads, lapsing after --cache-lock-download-ttl if it dies), then downloads itself" },
  { flag: "cache-inflight-staging-enabled", env: ["CACHE_INFLIGHT_STAGING_ENABLED"], configKey: "cache.inflight-staging.enabled", type: "boolean", instead: noStaging },
  { flag: "cache-inflight-staging-retention", env: ["CACHE_INFLIGHT_STAGING_RETENTION"], configKey: "cache.inflight-staging.retention", type: "duration", instead: noStaging },
  { flag: "cache-inflight-staging-part-size", env: ["CACHE_INFLIGHT_STAGING_PART_SIZE"], configKey: "cache.inflight-staging.part-size", type: "integer", instead: noStaging },
  // from earlier Go releases (test/fixtures/go-options.json "removed")
  { flag: "cache-storage-s3-use-ssl", env: ["CACHE_STORAGE_S3_USE_SSL"], configKey: "cache.storage.s3.use-ssl", type: "boolean", instead: "ncps takes http:// or https:// from --cache-storage-s3-endpoint" },
  { flag: "cache-lock-postgres-key-prefix", env: ["CACHE_LOCK_POSTGRES_KEY_PREFIX"], configKey: "cache.lock.postgres.key-prefix", type: "string", instead: "ncps locks in process, or through Redis with --cache-redis-addrs; never in PostgreSQL" },
  { flag: "verified-since", env: [], type: "duration", instead: "ncps fsck checks every NAR; with --verify-content it re-hashes all of them" },
  { flag: "force-reclaim", env: [], type: "boolean", instead: "fsck --repair sweeps the chunks no NAR holds once they are an hour unused, as eviction does" },
  { flag: "concurrency", env: ["CONCURRENCY"], configKey: "concurrency", type: "integer", instead: "only `ncps migrate-nar-to-chunks` and `ncps migrate-chunks-to-nar` read it, as a flag of their own (NARs converted at once)" },
];

function sameList(a: readonly string[] | undefined, b: readonly string[]): boolean {
  return a !== undefined && a.length === b.length && a.every((item, i) => item === b[i]);
}

// Every Config field has exactly one row: this fails to compile when one is missing.
type MissingFromTable = Exclude<keyof Config, (typeof table)[number]["key"]>;
const everyFieldHasAnOption: [MissingFromTable] extends [never] ? true : MissingFromTable = true;
void everyFieldHasAnOption;

export function optionByKey(key: keyof Config): OptionSpec {
  const spec = options.find((o) => o.key === key);
  if (!spec) throw new Error(`no option for ${key}`);
  return spec;
}

/** Options offered as flags by a command. */
export function optionsFor(command: "serve" | "migrate" | "fsck"): OptionSpec[] {
  return options.filter((o) => o.shared === true || (command === "serve" ? o.group !== "fsck" : command === "fsck" && (o.group === "fsck" || fsckAlso.has(o.key))));
}

/** `ncps fsck` offers, besides the shared options and its own: the storage it checks, the temp
 * directory, the upstreams (a narinfo from one of them gets its NAR back on request), and the
 * replicas' Redis (narinfos --repair removes are forgotten by every replica at once). */
const fsckAlso: ReadonlySet<keyof Config> = new Set<keyof Config>([
  "cacheStorageS3Bucket",
  "cacheStorageS3Endpoint",
  "cacheStorageS3Region",
  "cacheStorageS3AccessKeyId",
  "cacheStorageS3SecretAccessKey",
  "cacheStorageS3ForcePathStyle",
  "cacheStorageS3Prefix",
  "cacheTempPath",
  "cacheUpstreamUrls",
  "cacheRedisAddrs",
  "cacheRedisUsername",
  "cacheRedisPassword",
  "cacheRedisDb",
  "cacheRedisUseTls",
  "cacheLockRedisKeyPrefix",
]);

/** Bytes as the largest whole binary unit ("64G", "512M"), for help text. */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [["T", 2 ** 40], ["G", 2 ** 30], ["M", 2 ** 20], ["K", 2 ** 10]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return String(bytes);
}

/** Milliseconds as a Go duration string, for help text ("3s", "1m", "1m30s", "500ms"). */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  if (ms < 1000) return `${ms}ms`;
  const parts: string[] = [];
  let rest = ms;
  for (const [unit, size] of [["h", 3_600_000], ["m", 60_000], ["s", 1000], ["ms", 1]] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) parts.push(`${n}${unit}`);
    rest -= n * size;
  }
  return parts.join("");
}

/** The default as a reader sees it in --help and in the README; "" when there is none. */
export function describeDefault(spec: OptionSpec): string {
  if (spec.defaultText !== undefined) return spec.defaultText;
  const value = spec.default;
  if (value === undefined) return "";
  if (spec.type === "duration" && typeof value === "number") return formatDuration(value);
  if (spec.type === "size" && typeof value === "number") return formatSize(value);
  if (Array.isArray(value)) return value.join(", ");
  return String(value);
}
