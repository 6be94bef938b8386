/** /nix-cache-info, /pubkey, / and /healthz: what a client, an operator or a probe asks first. */
import type { Cache } from "../cache/cache.ts";
import { version } from "../version.ts";

export const getCacheInfo = (cache: Cache) => () =>
  new Response(cache.cacheInfo, { headers: { "content-type": "text/x-nix-cache-info" } });

export const getPublicKey = (cache: Cache) => () =>
  new Response(cache.publicKey + "\n", { headers: { "content-type": "text/plain" } });

export const getSummary = (cache: Cache, hostname: string) => () => Response.json({ hostname, publicKey: cache.publicKey, version });

export const getHealth = () => () => new Response("ok\n", { headers: { "content-type": "text/plain" } });
