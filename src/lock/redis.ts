/** Locker shared by replicas through Redis: one key per lock name holding a random token.
 * A holder's lease (the key's TTL) is renewed while it holds the lock, so a long holder keeps
 * it and a dead process frees it after one TTL. Only the token's owner may extend or delete
 * the key (Lua compare-and-act), so a late release never frees somebody else's lock. */
import { Redis, type RedisOptions } from "ioredis";
import { DEFAULT_WAIT_MS, LockerClosedError, type Locker } from "./locker.ts";
import { withLockByTrying } from "./retry.ts";
import { formatRedisAddr, parseRedisAddr } from "./redis-addr.ts";
import type { Logger } from "../telemetry/logger.ts";
import { TIMED_OUT, within } from "../within.ts";

export interface RedisLockerOptions {
  /** "host:port" ("[v6addr]:port" for IPv6), read by parseRedisAddr as validation reads
   * them. Single node: only the first address is used; Sentinel and Cluster are not supported. */
  addrs: string[];
  username?: string;
  password?: string;
  db?: number;
  tls?: boolean;
  /** Prepended to every lock name; default "ncps:lock:". */
  keyPrefix?: string;
  /** Where connection trouble and lost leases are reported; silent without it. */
  logger?: Logger;
}

export const DEFAULT_KEY_PREFIX = "ncps:lock:";
const DEFAULT_TTL_MS = 60_000;
const CHECK_TIMEOUT_MS = 3_000;
/** The most of a lock's value holderOf reads: a token (36) and a holder note (a replica's
 * URL and a 43-character MAC) fit many times over. Anyone who can write to Redis can write a
 * value of any size there; a longer one is not a note we wrote, and is never read whole. */
const MAX_LOCK_VALUE_BYTES = 16 * 1024;
/** Bounds every command, so a stalled server fails a lock attempt instead of hanging it. */
const COMMAND_TIMEOUT_MS = 5_000;

/** Extends the lease only while the key still holds our token. */
const RENEW_SCRIPT = `if redis.call("get", KEYS[1]) == ARGV[1] then
  return redis.call("pexpire", KEYS[1], ARGV[2])
end
return 0`;

/** Deletes the key only while it still holds our token. */
const RELEASE_SCRIPT = `if redis.call("get", KEYS[1]) == ARGV[1] then
  return redis.call("del", KEYS[1])
end
return 0`;

/** One holding of a lock: its token and the timer of the next lease renewal. */
interface Lease {
  key: string;
  token: string;
  ttlMs: number;
  renewTimer: ReturnType<typeof setTimeout> | null;
  released: boolean;
}

/** How to reach one Redis server: what every ncps connection to it shares. */
export function redisConnection(addr: { host: string; port: number }, opts: Omit<RedisLockerOptions, "addrs">): RedisOptions {
  return {
    host: addr.host,
    port: addr.port,
    username: opts.username,
    password: opts.password,
    db: opts.db ?? 0,
    tls: opts.tls ? { servername: addr.host } : undefined,
  };
}

export class RedisLocker implements Locker {
  private readonly redis: Redis;
  /** "host:port" as shown in messages (never with credentials). */
  readonly address: string;
  private readonly keyPrefix: string;
  private readonly password: string | undefined;
  private readonly logger: Logger | undefined;
  private readonly leases = new Set<Lease>();
  /** Locks whose oversized value was reported: once each, not on every look of a waiter. */
  private readonly oversizedReported = new Set<string>();
  private connecting: Promise<void> | null = null;
  /** The last connection error ioredis reported; connect() itself only says "closed". */
  private lastError: Error | null = null;
  private closed = false;

  constructor(opts: RedisLockerOptions) {
    const first = opts.addrs[0];
    if (first === undefined) throw new Error("redis locker: no address given");
    const { host, port } = parseRedisAddr(first);
    this.address = formatRedisAddr({ host, port });
    this.keyPrefix = opts.keyPrefix ?? DEFAULT_KEY_PREFIX;
    this.password = opts.password;
    this.logger = opts.logger;
    this.redis = new Redis({
      ...redisConnection({ host, port }, opts),
      // connect on first use (or check()), not in the constructor
      lazyConnect: true,
      // while disconnected, commands fail at once instead of queueing for an unknown time;
      // a lock attempt that errors is better than one that hangs
      enableOfflineQueue: false,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectTimeout: CHECK_TIMEOUT_MS,
    });
    // without a listener an 'error' event would crash the process; ioredis keeps reconnecting
    this.redis.on("error", (err: Error) => {
      const repeated = this.lastError?.message === err.message;
      this.lastError = err;
      if (!repeated && !this.closed) this.logger?.warn("redis lock connection error", { addr: this.address, error: this.redact(err.message) });
    });
    this.redis.on("ready", () => {
      if (this.lastError) this.logger?.info("redis lock connection ready", { addr: this.address });
      this.lastError = null;
    });
  }

  /** PING within ~3 s; throws one line naming host:port (never the password). */
  async check(): Promise<void> {
    let answer: unknown;
    try {
      answer = await within(CHECK_TIMEOUT_MS, this.connected().then(() => this.redis.ping()));
    } catch (err) {
      throw new Error(`cannot reach redis at ${this.address}: ${err instanceof LockerClosedError ? err.message : this.reason(err)}`);
    }
    if (answer === TIMED_OUT) throw new Error(`cannot reach redis at ${this.address}: no answer within ${CHECK_TIMEOUT_MS} ms`);
  }

  withLock<T>(name: string, fn: () => Promise<T>, waitMs = DEFAULT_WAIT_MS): Promise<T> {
    return withLockByTrying(this, name, fn, waitMs, (err) =>
      this.logger?.warn("redis lock release failed", { lock: name, error: this.redact(String(err)) }),
    );
  }

  async tryLock(name: string, ttlMs = DEFAULT_TTL_MS, holder?: string): Promise<(() => Promise<void>) | null> {
    // The key's value is the token; a holder note follows it after a space (UUIDs have none).
    const token = holder === undefined ? crypto.randomUUID() : `${crypto.randomUUID()} ${holder}`;
    const lease: Lease = { key: this.keyPrefix + name, token, ttlMs, renewTimer: null, released: false };
    let taken: string | null;
    try {
      const redis = await this.connected();
      taken = await redis.set(lease.key, lease.token, "PX", ttlMs, "NX");
    } catch (err) {
      if (err instanceof LockerClosedError) throw err;
      throw new Error(`cannot take lock ${JSON.stringify(name)}: redis at ${this.address}: ${this.reason(err)}`);
    }
    if (taken !== "OK") return null;
    if (this.closed) {
      // close() ran while SET was in flight: nobody will renew or release this one
      return async () => {};
    }
    this.leases.add(lease);
    this.scheduleRenewal(lease);
    return () => this.release(lease);
  }

  /** A value over MAX_LOCK_VALUE_BYTES names no holder (null, with a warning): only its first
   * bytes past the bound are read, however large it is. */
  async holderOf(name: string): Promise<string | null> {
    let prefix: Buffer;
    try {
      // GETRANGE's end is inclusive: one byte past the bound tells a longer value; a missing key is ""
      prefix = await (await this.connected()).getrangeBuffer(this.keyPrefix + name, 0, MAX_LOCK_VALUE_BYTES);
    } catch (err) {
      if (err instanceof LockerClosedError) throw err;
      throw new Error(`cannot read lock ${JSON.stringify(name)}: redis at ${this.address}: ${this.reason(err)}`);
    }
    if (prefix.length > MAX_LOCK_VALUE_BYTES) {
      if (!this.oversizedReported.has(name)) {
        if (this.oversizedReported.size >= 1000) this.oversizedReported.clear();
        this.oversizedReported.add(name);
        this.logger?.warn("lock value over the size a holder note can have: not read, no holder named", { lock: name, maxBytes: MAX_LOCK_VALUE_BYTES });
      }
      return null;
    }
    const value = prefix.toString("utf8");
    const space = value.indexOf(" ");
    return space < 0 ? null : value.slice(space + 1);
  }

  /** Stops every renewal and closes the connection. Held keys are not deleted: they expire
   * after their TTL, as if the process had died. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const lease of this.leases) this.stopRenewal(lease);
    this.leases.clear();
    if (this.redis.status === "wait") {
      this.redis.disconnect();
      return;
    }
    await this.redis.quit().catch(() => this.redis.disconnect());
  }

  private scheduleRenewal(lease: Lease): void {
    lease.renewTimer = setTimeout(() => void this.renew(lease), Math.max(1, Math.floor(lease.ttlMs / 3)));
  }

  private async renew(lease: Lease): Promise<void> {
    lease.renewTimer = null;
    if (lease.released || this.closed) return;
    let extended: unknown;
    try {
      extended = await this.redis.eval(RENEW_SCRIPT, 1, lease.key, lease.token, lease.ttlMs);
    } catch (err) {
      // a connection blip: try again at the next tick; the lease may still be valid
      this.logger?.warn("redis lock renewal failed", { key: lease.key, error: this.redact(String(err)) });
      if (!lease.released && !this.closed) this.scheduleRenewal(lease);
      return;
    }
    if (lease.released || this.closed) return;
    if (extended === 1) {
      this.scheduleRenewal(lease);
      return;
    }
    // the key expired or changed hands (we were cut off longer than the TTL)
    this.leases.delete(lease);
    this.logger?.warn("redis lock lease lost", { key: lease.key });
  }

  private stopRenewal(lease: Lease): void {
    if (lease.renewTimer) clearTimeout(lease.renewTimer);
    lease.renewTimer = null;
  }

  /** Idempotent; deletes the key only if it still holds this lease's token. */
  private async release(lease: Lease): Promise<void> {
    if (lease.released) return;
    lease.released = true;
    this.stopRenewal(lease);
    this.leases.delete(lease);
    if (this.closed) return;
    await this.redis.eval(RELEASE_SCRIPT, 1, lease.key, lease.token);
  }

  /** The client once connected (connecting on first use); commands then never queue. */
  private async connected(): Promise<Redis> {
    if (this.closed) throw new LockerClosedError();
    if (this.redis.status === "wait") {
      this.connecting ??= this.redis.connect().finally(() => {
        this.connecting = null;
      });
    }
    if (this.connecting) await this.connecting;
    return this.redis;
  }

  /** One line saying why a command failed: the connection error if there is one (ioredis
   * itself then only says the stream is not writeable). */
  private reason(err: unknown): string {
    const cause = this.lastError ?? err;
    return this.redact(cause instanceof Error ? cause.message : String(cause));
  }

  private redact(text: string): string {
    const oneLine = text.replace(/\s+/g, " ").trim();
    return this.password ? oneLine.split(this.password).join("***") : oneLine;
  }
}
