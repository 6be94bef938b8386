/** PUT and DELETE (`nix copy --to`, `nix store copy-log --to`, realisations), at the root and under the Go
 * ncps prefix /upload/, plus GET /log/<drv>. Bodies are streamed, never buffered whole. */
import { declaredLength } from "../content-length.ts";
import { Refusal } from "../cache/errors.ts";
import type { Realisations } from "../cache/realisations.ts";
import type { Uploads, WriteResult } from "../cache/uploads.ts";
import { parseNcpsNarRequest } from "../nix/nar-url.ts";
import { notFound, textResponse } from "./errors.ts";
import { narInfoHashOf } from "./narinfo.ts";
import type { DrvOutputOf } from "./realisation.ts";
import type { RequestContext } from "./router.ts";

export interface WritePolicy {
  allowPut: boolean;
  allowDelete: boolean;
}

const notAllowed = (verb: string) => textResponse(405, `${verb} is not enabled on this cache`, { allow: "GET, HEAD" });

const written = (result: WriteResult) => (result === "created" ? textResponse(201, "created") : textResponse(200, "unchanged"));

type Handler = (ctx: RequestContext) => Promise<Response>;

/** Checked before the body is read: a disabled verb costs nothing. */
const putWhenAllowed = (policy: WritePolicy, fn: (ctx: RequestContext) => Promise<WriteResult>): Handler => async (ctx) =>
  policy.allowPut ? written(await fn(ctx)) : notAllowed("PUT");

const deleteWhenAllowed = (policy: WritePolicy, fn: (ctx: RequestContext) => Promise<boolean>): Handler => async (ctx) => {
  if (!policy.allowDelete) return notAllowed("DELETE");
  return (await fn(ctx)) ? new Response(null, { status: 204 }) : notFound();
};

export const putNarInfo = (uploads: Uploads, policy: WritePolicy) =>
  putWhenAllowed(policy, async ({ req, params }) => {
    const hash = narInfoHashOf(params.name!);
    // e.g. <hash>.ls from `nix copy --to '...?write-nar-listing=1'`
    if (hash === null) throw new Refusal("bad-request", "only narinfos, NARs and build logs can be uploaded");
    return uploads.putNarInfo(hash, req.body, declaredLength(req.headers));
  });

export const putNar = (uploads: Uploads, policy: WritePolicy) =>
  putWhenAllowed(policy, ({ req, params }) => uploads.putNar(parseNcpsNarRequest(`nar/${params.file}`), req.body, declaredLength(req.headers)));

export const putLog = (uploads: Uploads, policy: WritePolicy) =>
  putWhenAllowed(policy, ({ req, params }) => uploads.putLog(params.drv!, req.body, declaredLength(req.headers)));

export const putRealisation = (realisations: Realisations, policy: WritePolicy, idOf: DrvOutputOf) =>
  putWhenAllowed(policy, ({ req, params }) => realisations.put(idOf(params), req.body, declaredLength(req.headers)));

export const putCacheInfo = () => async () => textResponse(405, "nix-cache-info belongs to ncps", { allow: "GET, HEAD" });

export const deleteNarInfo = (uploads: Uploads, policy: WritePolicy) =>
  deleteWhenAllowed(policy, async ({ params }) => {
    const hash = narInfoHashOf(params.name!);
    return hash !== null && uploads.deleteNarInfo(hash);
  });

export const deleteNar = (uploads: Uploads, policy: WritePolicy) =>
  deleteWhenAllowed(policy, ({ params }) => uploads.deleteNar(parseNcpsNarRequest(`nar/${params.file}`).key));

export const getLog = (uploads: Uploads) => async ({ req, params, head, upstream }: RequestContext): Promise<Response> => {
  const log = await uploads.getLog(params.drv!, { upstream, signal: req.signal, head });
  if (!log) return notFound();
  const headers: Record<string, string> = { "content-type": "text/plain; charset=utf-8" };
  if (log.length !== null) headers["content-length"] = String(log.length);
  if (head && log.body instanceof ReadableStream) await log.body.cancel().catch(() => {}); // a stored log's stream (S3)
  return new Response(head ? null : log.body, { headers });
};
