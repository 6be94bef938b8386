/** Which Locker a configuration names: Redis when replicas share the work (one server, or a
 * quorum of several), else in-process; with degraded mode allowed, in-process whenever Redis
 * cannot be reached. */
import type { Config } from "../config/options.ts";
import type { Logger } from "../telemetry/logger.ts";
import { noBroadcast, type Broadcast } from "./broadcast.ts";
import type { DegradableOptions } from "./degradable.ts";
import type { Locker } from "./locker.ts";
import { MemoryLocker } from "./memory.ts";
import type { RedisLockerOptions } from "./redis.ts";

/** With --cache-redis-addrs, replicas coordinate through Redis; else locks are in-process. */
export function redisChoice(config: Config): Omit<RedisLockerOptions, "logger"> | null {
  if (config.cacheRedisAddrs.length === 0) return null;
  return {
    addrs: config.cacheRedisAddrs,
    username: config.cacheRedisUsername,
    password: config.cacheRedisPassword,
    db: config.cacheRedisDb,
    tls: config.cacheRedisUseTls,
    keyPrefix: config.cacheLockRedisKeyPrefix,
  };
}

/** Messages to every replica: through Redis pub/sub on every server of `redis`, else to
 * nobody. Trouble (Redis down) is logged, never thrown: losing a message costs a narinfo
 * copy that lives until it expires. */
export async function openBroadcast(redis: Omit<RedisLockerOptions, "logger"> | null, channel: string, logger: Logger): Promise<Broadcast> {
  if (redis === null) return noBroadcast;
  const { RedisBroadcast } = await import("./redis-broadcast.ts");
  return new RedisBroadcast({ ...redis, channel, logger });
}

/** Degraded mode (--cache-lock-allow-degraded-mode): absent, Redis trouble fails requests. */
export type DegradedMode = Omit<DegradableOptions, "logger">;

/** A MemoryLocker without `redis`; with it, a Redis locker that has answered a PING (or,
 * with `degraded`, one that will be asked again while locks are taken in-process). Until
 * that first answer, trouble is the caller's one start-up error (or the one degraded-mode
 * warning), not also log records. */
export async function openLocker(redis: Omit<RedisLockerOptions, "logger"> | null, logger: Logger, degraded?: DegradedMode): Promise<Locker> {
  if (redis === null) return new MemoryLocker();
  // ioredis loads only when used
  const [{ RedisLocker }, { QuorumLocker }, { DegradableLocker }] = await Promise.all([import("./redis.ts"), import("./quorum.ts"), import("./degradable.ts")]);
  let reachable = false;
  const once = (log: Logger["info"]): Logger["info"] => (msg, fields) => reachable && log(msg, fields);
  const lockLogger: Logger = {
    debug: once(logger.debug),
    info: once(logger.info),
    warn: once(logger.warn),
    error: once(logger.error),
    child: (fields) => logger.child(fields),
    tee: (also) => logger.tee(also),
  };
  const options = { ...redis, logger: lockLogger };
  const locker = redis.addrs.length > 1 ? new QuorumLocker(options) : new RedisLocker(options);
  if (degraded) {
    const degradable = new DegradableLocker(locker, {
      ...degraded,
      logger,
      onDegraded: (on) => {
        if (!on) reachable = true;
        degraded.onDegraded?.(on);
      },
    });
    await locker.check().then(
      () => (reachable = true),
      (err: Error) => degradable.startDegraded(err.message),
    );
    return degradable;
  }
  try {
    await locker.check();
    reachable = true;
  } catch (err) {
    await locker.close().catch(() => {});
    throw err;
  }
  return locker;
}
