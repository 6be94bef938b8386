/** PUT and DELETE (`nix copy --to`, `nix store copy-log --to`), at the root and under the Go
 * ncps prefix /upload/, plus GET /log/<drv>. Bodies are streamed, never parsed by Elysia. */
import { Elysia } from "elysia";
import { Refusal } from "../cache/errors.ts";
import type { Uploads, WriteResult } from "../cache/uploads.ts";
import { parseNcpsNarRequest } from "../nix/nar-url.ts";
import type { Logger } from "../telemetry/logger.ts";
import { errorResponse, notFound, textResponse } from "./errors.ts";
import { narInfoHashOf } from "./narinfo.ts";

export interface WritePolicy {
  allowPut: boolean;
  allowDelete: boolean;
}

const notAllowed = (verb: string) =>
  textResponse(405, `${verb} is not enabled on this cache`, { allow: "GET, HEAD" });

const written = (result: WriteResult) =>
  result === "created" ? textResponse(201, "created") : textResponse(200, "unchanged");

function declaredLength(req: Request): number | null {
  const header = req.headers.get("content-length");
  return header === null ? null : Number(header);
}

export function writeRoutes(uploads: Uploads, policy: WritePolicy, logger: Logger) {
  const put = (what: string, fn: (req: Request) => Promise<WriteResult>) => async ({ request }: { request: Request }) => {
    if (!policy.allowPut) return notAllowed("PUT"); // before reading the body
    try {
      return written(await fn(request));
    } catch (err) {
      await request.body?.cancel().catch(() => {});
      return errorResponse(err, logger, { put: what });
    }
  };
  const del = (what: string, fn: () => Promise<boolean>) => async () => {
    if (!policy.allowDelete) return notAllowed("DELETE");
    try {
      return (await fn()) ? new Response(null, { status: 204 }) : notFound();
    } catch (err) {
      return errorResponse(err, logger, { delete: what });
    }
  };
  const putNarInfo = ({ params, request }: { params: { name: string }; request: Request }) =>
    put(params.name, async (req) => {
      const hash = narInfoHashOf(params.name);
      // e.g. <hash>.ls from `nix copy --to '...?write-nar-listing=1'`
      if (hash === null) throw new Refusal("bad-request", "only narinfos, NARs and build logs can be uploaded");
      return uploads.putNarInfo(hash, req.body, declaredLength(req));
    })({ request });
  const putNar = ({ params, request }: { params: { "*": string }; request: Request }) =>
    put(params["*"], (req) => uploads.putNar(parseNcpsNarRequest(`nar/${params["*"]}`), req.body, declaredLength(req)))({ request });
  const deleteNarInfo = ({ params }: { params: { name: string } }) =>
    del(params.name, async () => {
      const hash = narInfoHashOf(params.name);
      return hash !== null && uploads.deleteNarInfo(hash);
    })();
  const deleteNar = ({ params }: { params: { "*": string } }) =>
    del(params["*"], () => uploads.deleteNar(parseNcpsNarRequest(`nar/${params["*"]}`).key))();
  const none = { parse: "none" as const };

  return new Elysia()
    .put("/nix-cache-info", () => textResponse(405, "nix-cache-info belongs to ncps", { allow: "GET, HEAD" }), none)
    .put("/:name", putNarInfo, none)
    .put("/upload/:name", putNarInfo, none)
    .put("/nar/*", putNar, none)
    .put("/upload/nar/*", putNar, none)
    .put("/log/*", ({ params, request }) => put(params["*"], (req) => uploads.putLog(params["*"], req.body, declaredLength(req)))({ request }), none)
    .delete("/:name", deleteNarInfo)
    .delete("/upload/:name", deleteNarInfo)
    .delete("/nar/*", deleteNar)
    .delete("/upload/nar/*", deleteNar)
    .get("/log/*", async ({ params }) => {
      try {
        const log = await uploads.getLog(params["*"]);
        if (!log) return notFound();
        const headers: Record<string, string> = { "content-type": "text/plain; charset=utf-8" };
        if (log.length !== null) headers["content-length"] = String(log.length);
        return new Response(log.body, { headers });
      } catch (err) {
        return errorResponse(err, logger, { log: params["*"] });
      }
    });
}
