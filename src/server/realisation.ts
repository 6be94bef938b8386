/** GET/HEAD of realisations: /realisations/<drv hash>!<output>.doi (Nix 2.8-2.34) and
 * /build-trace-v2/<drv>/<output>[.doi] (Nix 2.35 on, the Go ncps), and the same under
 * /upload/, which never asks an upstream. Their PUT is in write.ts. */
import type { Realisations } from "../cache/realisations.ts";
import { parseBuildTraceTarget, parseRealisationFileName, type DrvOutput } from "../nix/realisation.ts";
import { notFound } from "./errors.ts";
import type { RequestContext } from "./router.ts";

/** The derivation output a route's parameters name (a NixFormatError, hence a 400, when they
 * name none). */
export type DrvOutputOf = (params: Record<string, string>) => DrvOutput;

export const realisationOf: DrvOutputOf = (params) => parseRealisationFileName(params.file!);
export const buildTraceOf: DrvOutputOf = (params) => parseBuildTraceTarget(params.drv!, params.output!);

export function getRealisation(realisations: Realisations, idOf: DrvOutputOf) {
  return async ({ params, head, upstream }: RequestContext): Promise<Response> => {
    const text = await realisations.get(idOf(params), { upstream });
    if (text === null) return notFound();
    const body = Buffer.from(text);
    const headers = { "content-type": "application/json", "content-length": String(body.length) };
    return new Response(head ? null : body, { headers });
  };
}
