/** Checks a resolved Config; every problem is one ConfigError line naming the option. */
import { existsSync } from "node:fs";
import { chunkSizesProblem } from "../cache/chunker.ts";
import { DatabaseUrlError, parseDatabaseUrl } from "../db/database-url.ts";
import { parseRedisAddr, RedisAddrError } from "../lock/redis-addr.ts";
import { NixFormatError } from "../nix/errors.ts";
import { parsePublicKey } from "../nix/signature.ts";
import { parseAddressRange, TrustedProxyError } from "../server/client-address.ts";
import { ConfigError } from "./errors.ts";
import { parseSchedule, ScheduleError } from "./schedule.ts";
import { logLevels } from "./options.ts";
import type { Config, LogLevel } from "./options.ts";
import { parseUpstreamProxy, ProxyError } from "../upstream/proxy.ts";
import { parseUpstreamUrl, upstreamIdentity, UpstreamUrlError, withoutCredentials } from "../upstream/upstream-url.ts";

export function validateConfig(config: Config): void {
  if (!logLevels.includes(config.logLevel as LogLevel)) {
    throw new ConfigError(`unknown log level "${config.logLevel}" (use ${logLevels.join(", ")})`);
  }
  if (config.cacheHostname.trim() === "") throw new ConfigError("--cache-hostname is empty");
  checkStorage(config);
  checkDatabaseUrl(config.cacheDatabaseUrl);
  if (!Number.isSafeInteger(config.cachePriority) || config.cachePriority < 0) {
    throw new ConfigError(`--cache-priority must be a whole number >= 0, got ${config.cachePriority}`);
  }
  if (config.cacheUpstreamUrls.length === 0) throw new ConfigError("at least one --cache-upstream-url is required");
  for (const url of config.cacheUpstreamUrls) checkUpstreamUrl(url);
  // named as ncps names upstreams: the URL's user and password need not be repeated
  const identities = new Set(config.cacheUpstreamUrls.map(upstreamIdentity));
  for (const url of config.cacheUpstreamAcceptUnsigned ?? []) {
    checkUpstreamUrl(url);
    if (!identities.has(upstreamIdentity(url))) {
      throw new ConfigError(`--cache-upstream-accept-unsigned ${withoutCredentials(url)} is not one of the --cache-upstream-url upstreams`);
    }
  }
  const proxied = new Set<string>();
  for (const text of config.cacheUpstreamProxies ?? []) {
    const upstream = checkUpstreamProxy(text);
    if (!identities.has(upstream)) throw new ConfigError(`--cache-upstream-proxy: ${upstream} is not one of the --cache-upstream-url upstreams`);
    if (proxied.has(upstream)) throw new ConfigError(`--cache-upstream-proxy: ${upstream} is given more than one proxy`);
    proxied.add(upstream);
  }
  for (const key of config.cacheUpstreamPublicKeys) checkPublicKey(key);
  parseServerAddr(config.serverAddr);
  for (const addr of config.cacheRedisAddrs) checkRedisAddr(addr);
  if (config.cacheAdvertiseUrl !== undefined) parseAdvertiseUrl(config.cacheAdvertiseUrl);
  if (config.netrcFile !== undefined && !existsSync(config.netrcFile)) {
    throw new ConfigError(`netrc file not found: ${config.netrcFile}`);
  }
  for (const key of config.cacheTrustedUploadKeys) checkPublicKey(key);
  if (config.cacheRequireTrustedSignature && config.cacheTrustedUploadKeys.length === 0) {
    throw new ConfigError("--cache-require-trusted-signature needs at least one --cache-trusted-upload-key");
  }
  if (config.cacheMaxUploadSize <= 0) throw new ConfigError("--cache-max-upload-size must be greater than 0");
  checkLruSchedule(config);
  const chunkSizes = chunkSizesProblem({ min: config.cacheCdcMin, avg: config.cacheCdcAvg, max: config.cacheCdcMax });
  if (chunkSizes) throw new ConfigError(`--cache-cdc-min/-avg/-max: ${chunkSizes}`);
  if (config.cacheLockLruTtl <= 0) throw new ConfigError("--cache-lock-lru-ttl must be greater than 0");
  if (config.otelGrpcUrl !== undefined) parseOtelGrpcUrl(config.otelGrpcUrl);
  for (const proxy of config.serverTrustedProxies) checkTrustedProxy(proxy);
}

/** The parser the server's client-address check uses. */
function checkTrustedProxy(text: string): void {
  try {
    parseAddressRange(text);
  } catch (err) {
    if (!(err instanceof TrustedProxyError)) throw err;
    throw new ConfigError(`invalid --server-trusted-proxy: ${err.message}`);
  }
}

/** As the Go ncps reads it: "http://host:port" is plaintext gRPC; "https://host:port" or a
 * bare "host:port" is TLS. */
export function parseOtelGrpcUrl(text: string): { url: string; insecure: boolean } {
  let url: URL;
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `https://${text}`);
  } catch {
    throw new ConfigError(`invalid --otel-grpc-url "${text}" (use http://host:port or https://host:port)`);
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.hostname === "") {
    throw new ConfigError(`invalid --otel-grpc-url "${text}" (use http://host:port or https://host:port)`);
  }
  return { url: url.origin, insecure: url.protocol === "http:" };
}

/** Longest --cache-advertise-url: it travels in the download claim's holder note, which other
 * replicas read only up to 16 KiB (lock/redis.ts); a DNS name is at most 253 characters. */
const MAX_ADVERTISE_URL = 1024;

/** --cache-advertise-url: an http(s) origin (no path: the internal route's path is fixed, and
 * a proxy rewriting it would break the replicas' request proof), without credentials. */
export function parseAdvertiseUrl(text: string): string {
  const bad = (why: string) => new ConfigError(`invalid --cache-advertise-url "${text}": ${why} (use http://host:port or https://host:port)`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw bad("not a URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw bad("not http or https");
  if (url.username !== "" || url.password !== "") throw bad("credentials are not allowed");
  if (url.pathname !== "/" || url.search !== "" || url.hash !== "") throw bad("a path, query or fragment is not allowed");
  if (url.origin.length > MAX_ADVERTISE_URL) throw bad(`longer than ${MAX_ADVERTISE_URL} characters`);
  return url.origin;
}

/** Exactly one of local or S3 storage; S3 with all it needs. (The key prefix is checked by
 * the S3 store itself at start-up, with the same rules as keys.) */
function checkStorage(config: Config): void {
  const s3Flags: [keyof Config, string][] = [
    ["cacheStorageS3Endpoint", "--cache-storage-s3-endpoint"],
    ["cacheStorageS3AccessKeyId", "--cache-storage-s3-access-key-id"],
    ["cacheStorageS3SecretAccessKey", "--cache-storage-s3-secret-access-key"],
    ["cacheStorageS3Region", "--cache-storage-s3-region"],
    ["cacheStorageS3ForcePathStyle", "--cache-storage-s3-force-path-style"],
    ["cacheStorageS3Prefix", "--cache-storage-s3-prefix"],
  ];
  if (config.cacheStorageS3Bucket === undefined) {
    const stray = s3Flags.find(([key]) => config[key] !== undefined);
    if (stray) throw new ConfigError(`${stray[1]} is set but --cache-storage-s3-bucket is not (S3 storage needs a bucket)`);
    return;
  }
  if (config.cacheStorageLocal !== undefined) {
    throw new ConfigError("--cache-storage-local and --cache-storage-s3-bucket are both set: choose local or S3 storage");
  }
  if (config.cacheStorageS3Endpoint === undefined) throw new ConfigError("S3 storage needs --cache-storage-s3-endpoint");
  // without both, the AWS credential chain (environment, profiles, roles) is asked at start
  const keys = s3Flags.slice(1, 3).filter(([key]) => config[key] === undefined).map(([, flag]) => flag);
  if (keys.length === 1) {
    throw new ConfigError(`S3 storage needs ${keys[0]} too (or neither key, to take credentials from the AWS chain: environment, profile, role)`);
  }
  if (/[/\\\s]/.test(config.cacheStorageS3Bucket)) {
    throw new ConfigError(`invalid --cache-storage-s3-bucket "${config.cacheStorageS3Bucket}" (a bucket name, without slashes)`);
  }
  const endpoint = config.cacheStorageS3Endpoint!;
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new ConfigError(`invalid --cache-storage-s3-endpoint "${endpoint}" (use http://host[:port] or https://host[:port])`);
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.hostname === "") {
    throw new ConfigError(`invalid --cache-storage-s3-endpoint "${endpoint}": it needs its scheme, http:// or https://`);
  }
}

function checkUpstreamUrl(text: string): void {
  try {
    parseUpstreamUrl(text);
  } catch (err) {
    if (!(err instanceof UpstreamUrlError)) throw err;
    throw new ConfigError(err.message);
  }
}

/** The upstream a --cache-upstream-proxy names. */
function checkUpstreamProxy(text: string): string {
  try {
    return parseUpstreamProxy(text).upstream;
  } catch (err) {
    if (!(err instanceof UpstreamUrlError) && !(err instanceof ProxyError)) throw err;
    throw new ConfigError(`--cache-upstream-proxy: ${err.message}`);
  }
}

/** The parser the eviction scheduler uses (the time zone is checked with it). */
function checkLruSchedule(config: Config): void {
  if (config.cacheLruSchedule === undefined && config.cacheLruScheduleTimezone === undefined) return;
  try {
    // a time zone alone is checked against a schedule that always parses
    parseSchedule(config.cacheLruSchedule ?? "@daily", config.cacheLruScheduleTimezone);
  } catch (err) {
    if (!(err instanceof ScheduleError)) throw err;
    const flag = /time zone/.test(err.message) ? "--cache-lru-schedule-timezone" : "--cache-lru-schedule";
    throw new ConfigError(`invalid ${flag}: ${err.message}`);
  }
}

/** The parser openMetadataStore uses; its messages never hold the URL (it may hold a password). */
function checkDatabaseUrl(text: string): void {
  try {
    parseDatabaseUrl(text);
  } catch (err) {
    if (!(err instanceof DatabaseUrlError)) throw err;
    throw new ConfigError(`invalid --cache-database-url: ${err.message}`);
  }
}

/** The parser the Redis locker uses. */
function checkRedisAddr(text: string): void {
  try {
    parseRedisAddr(text);
  } catch (err) {
    if (!(err instanceof RedisAddrError)) throw err;
    throw new ConfigError(`invalid --cache-redis-addrs entry: ${err.message}`);
  }
}

function checkPublicKey(text: string): void {
  try {
    parsePublicKey(text);
  } catch (err) {
    if (!(err instanceof NixFormatError)) throw err;
    const detail = err.message.replace(/^public key: /, "");
    throw new ConfigError(`invalid upstream public key "${text}" (${detail}); expected name:base64 of 32 bytes`);
  }
}

/** `host:port`, `[v6]:port` or `:port` (every interface, as in Go). */
export function parseServerAddr(text: string): { hostname: string; port: number } {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]\s]*):(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (!match || port > 65535) {
    throw new ConfigError(`invalid --server-addr "${text}" (use host:port or :port)`);
  }
  const host = match[1]!.replace(/^\[(.*)\]$/, "$1");
  return { hostname: host === "" ? "0.0.0.0" : host, port };
}

