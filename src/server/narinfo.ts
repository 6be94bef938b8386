/** GET/HEAD /<hash>.narinfo */
import { Elysia } from "elysia";
import type { Cache } from "../cache/cache.ts";
import { isStorePathHash } from "../nix/store-path.ts";
import type { Logger } from "../telemetry/logger.ts";
import { errorResponse, notFound, textResponse } from "./errors.ts";

const SUFFIX = ".narinfo";

/** Answers GET or HEAD for `/<name>` when name is `<hash>.narinfo` (404 otherwise). */
export function narInfoHandler(cache: Cache, logger: Logger) {
  return async (name: string, head: boolean): Promise<Response> => {
    if (!name.endsWith(SUFFIX)) return notFound();
    const hash = name.slice(0, -SUFFIX.length);
    if (!isStorePathHash(hash)) return textResponse(400, "invalid narinfo hash: expected 32 nix32 characters");
    try {
      const text = await cache.narInfo(hash);
      if (text === null) return notFound();
      const headers = {
        "content-type": "text/x-nix-narinfo",
        "content-length": String(Buffer.byteLength(text)),
      };
      return new Response(head ? null : text, { headers });
    } catch (err) {
      return errorResponse(err, logger, { hash });
    }
  };
}

export function narInfoRoutes(cache: Cache, logger: Logger) {
  const handle = narInfoHandler(cache, logger);
  return new Elysia().get("/:name", ({ params }) => handle(params.name, false));
}
