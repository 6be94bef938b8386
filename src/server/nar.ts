/** GET/HEAD /nar/<hash>.nar[.ext]: from storage (sendfile, Range) or from a download in flight.
 * The same under /upload/ answers from storage only. An uncompressed NAR stored
 * zstd-compressed goes as it is stored (Content-Encoding: zstd, sendfile) to a client that
 * accepts zstd and asks for no Range, decompressed to any other; HEAD says which. */
import type { Cache, NarSource } from "../cache/cache.ts";
import { parseNcpsNarRequest, type NcpsNarRequest } from "../nix/nar-url.ts";
import { acceptsEncoding } from "./accept-encoding.ts";
import { notFound, textResponse } from "./errors.ts";
import { resolveRange } from "./range.ts";
import type { RequestContext } from "./router.ts";

/** Nix (2.8 at least) sends no Accept-Encoding but decodes any Content-Encoding it gets (its
 * filetransfer.cc hands it to its decompression sink), so its User-Agent counts as accepting
 * zstd; without the header any other client gets identity bytes. */
function acceptsZstd(req: Request): boolean {
  const header = req.headers.get("accept-encoding");
  if (header !== null) return acceptsEncoding(header, "zstd");
  return /\bNix\/\d/.test(req.headers.get("user-agent") ?? "");
}

export function getNar(cache: Cache) {
  return serveNar((nar, opts) => cache.nar(nar, opts));
}

/** The internal route another replica streams a NAR from while this one downloads it. */
export function getNarForReplica(cache: Cache) {
  return serveNar((nar) => cache.downloadForReplica(nar));
}

type FindNar = (nar: NcpsNarRequest, opts: { startDownload: boolean; upstream: boolean }) => Promise<NarSource | null>;

function serveNar(find: FindNar) {
  return async ({ req, params, head, upstream }: RequestContext): Promise<Response> => {
    const nar = parseNcpsNarRequest(`nar/${params.file}`);
    const source = await find(nar, { startDownload: !head, upstream });
    if (!source) return notFound();
    const headers: Record<string, string> = { "content-type": "application/x-nix-nar", "accept-ranges": "bytes" };
    const rangeHeader = req.headers.get("range");
    if (source.zstd) {
      // Every answer for this NAR, whichever encoding it chose, names both headers acceptsZstd
      // reads, so a shared cache in front keys on both (a NAR with no zstd form, or still
      // downloading, is the same bytes for everyone and has no Vary).
      headers.vary = "Accept-Encoding, User-Agent";
      if (rangeHeader === null && acceptsZstd(req)) {
        headers["content-encoding"] = "zstd";
        headers["content-length"] = String(source.zstd.size);
        return new Response(head ? null : (await source.zstd.open()).body, { headers });
      }
    }
    // A stored-zstd NAR's own size is a database lookup: asked only for HEAD's Content-Length
    // and to resolve a Range.
    const size = source.zstd ? (head || rangeHeader !== null ? await source.zstd.narSize() : null) : source.size;
    if (head) {
      if (size !== null) headers["content-length"] = String(size);
      return new Response(null, { headers });
    }
    const range = size === null ? null : resolveRange(rangeHeader, size);
    if (range === "unsatisfiable") return textResponse(416, "range not satisfiable", { "content-range": `bytes */${size}` });
    const body = await source.open(range ?? undefined);
    if (body.length !== null) headers["content-length"] = String(body.length);
    if (range) headers["content-range"] = `bytes ${range.start}-${range.end}/${size}`;
    return new Response(body.body, { status: range ? 206 : 200, headers });
  };
}
