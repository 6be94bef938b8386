/** The HTTP face of the cache: Elysia on Bun.serve, one file per endpoint family. */
import { Elysia } from "elysia";
import type { Cache } from "../cache/cache.ts";
import type { Logger } from "../telemetry/logger.ts";
import { cacheInfoRoutes } from "./cache-info.ts";
import { notFound, textResponse } from "./errors.ts";
import { healthRoutes } from "./health.ts";
import { narRoutes } from "./nar.ts";
import { narInfoRoutes } from "./narinfo.ts";

export interface ServerDeps {
  cache: Cache;
  hostname: string;
  logger: Logger;
}

export function createApp({ cache, hostname, logger }: ServerDeps) {
  return new Elysia()
    .onError(({ code, error }) => {
      if (code === "NOT_FOUND") return notFound();
      logger.error("unhandled request error", { code, error });
      return textResponse(500, "internal error");
    })
    .use(healthRoutes())
    .use(cacheInfoRoutes(cache, hostname))
    .use(narRoutes(cache, logger))
    .use(narInfoRoutes(cache, logger));
}
