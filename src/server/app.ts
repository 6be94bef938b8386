/** The HTTP face of the cache: Elysia on Bun.serve, one file per endpoint family. */
import { Elysia } from "elysia";
import type { Cache } from "../cache/cache.ts";
import type { Uploads } from "../cache/uploads.ts";
import type { Logger } from "../telemetry/logger.ts";
import { createAuthGuard, type AuthOptions } from "./auth.ts";
import { cacheInfoRoutes } from "./cache-info.ts";
import { notFound, textResponse } from "./errors.ts";
import { healthRoutes } from "./health.ts";
import { narHandler, narRoutes } from "./nar.ts";
import { narInfoHandler, narInfoRoutes } from "./narinfo.ts";
import { writeRoutes, type WritePolicy } from "./write.ts";

export interface ServerDeps {
  cache: Cache;
  uploads: Uploads;
  hostname: string;
  policy: WritePolicy;
  auth: AuthOptions;
  logger: Logger;
}

export function createApp({ cache, uploads, hostname, policy, logger }: ServerDeps) {
  return new Elysia()
    .onError(({ code, error }) => {
      if (code === "NOT_FOUND") return notFound();
      logger.error("unhandled request error", { code, error });
      return textResponse(500, "internal error");
    })
    .use(healthRoutes())
    .use(cacheInfoRoutes(cache, hostname))
    .use(writeRoutes(uploads, policy, logger))
    .use(narRoutes(cache, logger))
    .use(narInfoRoutes(cache, logger));
}

/** The request handler for Bun.serve: the token check, then the routes. Elysia 1.4 answers
 * HEAD on a dynamic route by running the GET handler and measuring its body, which for a NAR
 * would mean downloading and reading it; so HEAD on narinfos and NARs goes straight to
 * handlers that only look things up. */
export function createFetchHandler(deps: ServerDeps): (req: Request) => Response | Promise<Response> {
  const app = createApp(deps);
  const guard = createAuthGuard(deps.auth);
  const head = (upstream: boolean) => ({
    narInfo: narInfoHandler(deps.cache, deps.logger, { upstream }),
    nar: narHandler(deps.cache, deps.logger, { upstream }),
  });
  const routes = { "/": head(true), "/upload/": head(false) };
  return (req) => {
    const denied = guard(req);
    if (denied) return denied;
    if (req.method !== "HEAD") return app.handle(req);
    const path = new URL(req.url).pathname;
    const prefix = path.startsWith("/upload/") ? "/upload/" : "/";
    const rest = path.slice(prefix.length);
    if (rest.startsWith("nar/")) return routes[prefix].nar(rest.slice("nar/".length), req, true);
    if (!rest.includes("/") && rest.endsWith(".narinfo")) return routes[prefix].narInfo(rest, true);
    return app.handle(req);
  };
}
