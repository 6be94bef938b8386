/** GET/HEAD /nar/<hash>.nar[.ext]: from storage (sendfile, Range) or from a download in flight.
 * The same under /upload/ answers from storage only. */
import type { Cache } from "../cache/cache.ts";
import { parseNcpsNarRequest } from "../nix/nar-url.ts";
import { notFound, textResponse } from "./errors.ts";
import { resolveRange } from "./range.ts";
import type { RequestContext } from "./router.ts";

export function getNar(cache: Cache) {
  return async ({ req, params, head, upstream }: RequestContext): Promise<Response> => {
    const nar = parseNcpsNarRequest(`nar/${params.file}`);
    const source = await cache.nar(nar, { startDownload: !head, upstream });
    if (!source) return notFound();
    const headers: Record<string, string> = { "content-type": "application/x-nix-nar", "accept-ranges": "bytes" };
    if (head) {
      if (source.size !== null) headers["content-length"] = String(source.size);
      return new Response(null, { headers });
    }
    const range = source.size === null ? null : resolveRange(req.headers.get("range"), source.size);
    if (range === "unsatisfiable") return textResponse(416, "range not satisfiable", { "content-range": `bytes */${source.size}` });
    const body = await source.open(range ?? undefined);
    if (body.length !== null) headers["content-length"] = String(body.length);
    if (range) headers["content-range"] = `bytes ${range.start}-${range.end}/${source.size}`;
    return new Response(body.body, { status: range ? 206 : 200, headers });
  };
}
