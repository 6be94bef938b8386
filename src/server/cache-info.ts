/** /nix-cache-info, /pubkey, / : what a client or an operator asks first. */
import { Elysia } from "elysia";
import type { Cache } from "../cache/cache.ts";
import { version } from "../version.ts";

export function cacheInfoRoutes(cache: Cache, hostname: string) {
  const info = () => new Response(cache.cacheInfo, { headers: { "content-type": "text/x-nix-cache-info" } });
  return new Elysia()
    .get("/nix-cache-info", info)
    .get("/pubkey", () => new Response(cache.publicKey + "\n", { headers: { "content-type": "text/plain" } }))
    .get("/", () => Response.json({ hostname, publicKey: cache.publicKey, version }));
}
