/** The HTTP face of the cache: Elysia on Bun.serve, one file per endpoint family. */
import { Elysia } from "elysia";
import type { Cache } from "../cache/cache.ts";
import type { Logger } from "../telemetry/logger.ts";
import { cacheInfoRoutes } from "./cache-info.ts";
import { notFound, textResponse } from "./errors.ts";
import { healthRoutes } from "./health.ts";
import { narHandler, narRoutes } from "./nar.ts";
import { narInfoHandler, narInfoRoutes } from "./narinfo.ts";

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

/** The request handler for Bun.serve. Elysia 1.4 answers HEAD on a dynamic route by running
 * the GET handler and measuring its body, which for a NAR would mean downloading and reading
 * it; so HEAD on narinfos and NARs goes straight to handlers that only look things up. */
export function createFetchHandler(deps: ServerDeps): (req: Request) => Response | Promise<Response> {
  const app = createApp(deps);
  const narInfo = narInfoHandler(deps.cache, deps.logger);
  const nar = narHandler(deps.cache, deps.logger);
  return (req) => {
    if (req.method !== "HEAD") return app.handle(req);
    const path = new URL(req.url).pathname;
    if (path.startsWith("/nar/")) return nar(path.slice("/nar/".length), req, true);
    if (path.lastIndexOf("/") === 0 && path.endsWith(".narinfo")) return narInfo(path.slice(1), true);
    return app.handle(req);
  };
}
