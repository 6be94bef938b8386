/** GET/HEAD /<hash>.narinfo (and /upload/<hash>.narinfo, which never asks an upstream). */
import type { Cache } from "../cache/cache.ts";
import { NixFormatError } from "../nix/errors.ts";
import { isStorePathHash } from "../nix/store-path.ts";
import { notFound } from "./errors.ts";
import type { RequestContext } from "./router.ts";

const SUFFIX = ".narinfo";

/** The hash of a `<hash>.narinfo` path segment; null when the name is no narinfo at all. */
export function narInfoHashOf(name: string): string | null {
  if (!name.endsWith(SUFFIX)) return null;
  const hash = name.slice(0, -SUFFIX.length);
  if (!isStorePathHash(hash)) throw new NixFormatError("invalid narinfo hash: expected 32 nix32 characters", "path");
  return hash;
}

export function getNarInfo(cache: Cache) {
  return async ({ params, head, upstream }: RequestContext): Promise<Response> => {
    const hash = narInfoHashOf(params.name!);
    if (hash === null) return notFound();
    const body = await cache.narInfo(hash, { upstream });
    if (body === null) return notFound();
    const headers = { "content-type": "text/x-nix-narinfo", "content-length": String(body.length) };
    return new Response(head ? null : body, { headers });
  };
}
