/** GET/HEAD /<hash>.narinfo (and /upload/<hash>.narinfo, which never asks an upstream). */
import { Elysia } from "elysia";
import type { Cache } from "../cache/cache.ts";
import { NixFormatError } from "../nix/errors.ts";
import { isStorePathHash } from "../nix/store-path.ts";
import type { Logger } from "../telemetry/logger.ts";
import { errorResponse, notFound } from "./errors.ts";

const SUFFIX = ".narinfo";

/** The hash of a `<hash>.narinfo` path segment; null when the name is no narinfo at all. */
export function narInfoHashOf(name: string): string | null {
  if (!name.endsWith(SUFFIX)) return null;
  const hash = name.slice(0, -SUFFIX.length);
  if (!isStorePathHash(hash)) throw new NixFormatError("invalid narinfo hash: expected 32 nix32 characters", "path");
  return hash;
}

/** Answers GET or HEAD for `/<name>`. */
export function narInfoHandler(cache: Cache, logger: Logger, opts: { upstream: boolean }) {
  return async (name: string, head: boolean): Promise<Response> => {
    try {
      const hash = narInfoHashOf(name);
      if (hash === null) return notFound();
      const body = await cache.narInfo(hash, opts);
      if (body === null) return notFound();
      const headers = { "content-type": "text/x-nix-narinfo", "content-length": String(body.length) };
      return new Response(head ? null : body, { headers });
    } catch (err) {
      return errorResponse(err, logger, { name });
    }
  };
}

export function narInfoRoutes(cache: Cache, logger: Logger) {
  const fromAnywhere = narInfoHandler(cache, logger, { upstream: true });
  const heldOnly = narInfoHandler(cache, logger, { upstream: false });
  return new Elysia()
    .get("/:name", ({ params }) => fromAnywhere(params.name, false))
    .get("/upload/:name", ({ params }) => heldOnly(params.name, false));
}
