/** `ncps serve`: start, then run until SIGINT/SIGTERM and stop cleanly. */
import { startNcps } from "../compose.ts";
import type { Config } from "../config/options.ts";
import { createLogger } from "../telemetry/logger.ts";

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
