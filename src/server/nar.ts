/** GET/HEAD /nar/<hash>.nar[.ext]: from storage (sendfile, Range) or from a download in flight.
 * The same under /upload/ answers from storage only. */
import { Elysia } from "elysia";
import type { Cache } from "../cache/cache.ts";
import { parseNcpsNarRequest } from "../nix/nar-url.ts";
import type { Logger } from "../telemetry/logger.ts";
import { errorResponse, notFound, textResponse } from "./errors.ts";
import { resolveRange } from "./range.ts";

/** Answers GET or HEAD for the path after `/nar/`. */
export function narHandler(cache: Cache, logger: Logger, opts: { upstream: boolean }) {
  return async (rest: string, request: Request, head: boolean): Promise<Response> => {
    try {
      const req = parseNcpsNarRequest(`nar/${rest}`);
      const source = await cache.nar(req, { startDownload: !head, upstream: opts.upstream });
      if (!source) return notFound();
      const headers: Record<string, string> = { "content-type": "application/x-nix-nar", "accept-ranges": "bytes" };
      if (head) {
        if (source.size !== null) headers["content-length"] = String(source.size);
        return new Response(null, { headers });
      }
      const range = source.size === null ? null : resolveRange(request.headers.get("range"), source.size);
      if (range === "unsatisfiable") return textResponse(416, "range not satisfiable", { "content-range": `bytes */${source.size}` });
      const body = await source.open(range ?? undefined);
      if (body.length !== null) headers["content-length"] = String(body.length);
      if (range) headers["content-range"] = `bytes ${range.start}-${range.end}/${source.size}`;
      return new Response(body.body, { status: range ? 206 : 200, headers });
    } catch (err) {
      return errorResponse(err, logger, { path: `nar/${rest}` });
    }
  };
}

export function narRoutes(cache: Cache, logger: Logger) {
  const fromAnywhere = narHandler(cache, logger, { upstream: true });
  const heldOnly = narHandler(cache, logger, { upstream: false });
  return new Elysia()
    .get("/nar/*", ({ params, request }) => fromAnywhere(params["*"], request, false))
    .get("/upload/nar/*", ({ params, request }) => heldOnly(params["*"], request, false));
}
