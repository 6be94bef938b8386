/** `ncps serve`: start, then run until SIGINT/SIGTERM. The first signal stops gracefully: no
 * new connections, while responses and upstream downloads in flight get up to
 * --server-shutdown-timeout to finish; a second signal, or the timeout, stops at once (exit 1:
 * something was cut short; the next start removes the temp files it left, and the store stays
 * consistent since a NAR is recorded only after its bytes are stored). */
import { startNcps } from "../compose.ts";
import type { Config } from "../config/options.ts";
import { createLogger } from "../telemetry/logger.ts";
import { notifySystemd } from "./systemd-notify.ts";

export async function serve(config: Config): Promise<void> {
  const logger = createLogger(config.logLevel);
  const running = await startNcps(config, logger);
  const first = await new Promise<string>((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
  });
  notifySystemd("STOPPING=1");
  logger.info("shutting down: finishing responses and downloads in flight", { signal: first, timeoutMs: config.serverShutdownTimeout });
  const cut = new Promise<string>((resolve) => {
    // unref: once everything has stopped, this timer must not keep the process alive
    const timer = setTimeout(() => resolve("timeout"), config.serverShutdownTimeout).unref();
    const again = (signal: string) => {
      clearTimeout(timer);
      resolve(`second ${signal}`);
    };
    process.once("SIGINT", () => again("SIGINT"));
    process.once("SIGTERM", () => again("SIGTERM"));
  });
  const outcome = await Promise.race([running.stop().then(() => null), cut]);
  if (outcome === null) {
    logger.info("stopped");
    return;
  }
  logger.warn("stopping at once: responses and downloads still in flight are cut", { reason: outcome });
  process.exit(1);
}
