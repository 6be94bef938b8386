/** Which Locker a configuration names: Redis when replicas share the work, else in-process. */
import type { Logger } from "../telemetry/logger.ts";
import type { Locker } from "./locker.ts";
import { MemoryLocker } from "./memory.ts";
import type { RedisLockerOptions } from "./redis.ts";

/** A MemoryLocker without `redis`; with it, a RedisLocker that has answered a PING. Until
 * that first answer, trouble is the caller's one start-up error, not also log records. */
export async function openLocker(redis: Omit<RedisLockerOptions, "logger"> | null, logger: Logger): Promise<Locker> {
  if (redis === null) return new MemoryLocker();
  const { RedisLocker } = await import("./redis.ts"); // ioredis loads only when used
  let reachable = false;
  const once = (log: Logger["info"]): Logger["info"] => (msg, fields) => reachable && log(msg, fields);
  const lockLogger: Logger = {
    debug: once(logger.debug),
    info: once(logger.info),
    warn: once(logger.warn),
    error: once(logger.error),
    child: (fields) => logger.child(fields),
  };
  const locker = new RedisLocker({ ...redis, logger: lockLogger });
  try {
    await locker.check();
    reachable = true;
  } catch (err) {
    await locker.close().catch(() => {});
    throw err;
  }
  return locker;
}
