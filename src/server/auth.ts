/** Bearer tokens for reads and writes. Nix clients can only send netrc credentials, which
 * curl sends as HTTP Basic, so the token is also accepted as the Basic password. */
import { createHash, timingSafeEqual } from "node:crypto";
import { textResponse } from "./errors.ts";
import type { Access } from "./router.ts";

export interface AuthOptions {
  getToken?: string;
  putToken?: string;
  /** Whether a request carries another replica's proof; absent: no replica is let in. */
  replica?: (req: Request) => boolean;
}

function presentedToken(header: string | null): string | null {
  if (!header) return null;
  const [scheme, value = ""] = header.trim().split(/\s+/, 2);
  if (scheme?.toLowerCase() === "bearer") return value;
  if (scheme?.toLowerCase() === "basic") {
    const decoded = Buffer.from(value, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    return colon >= 0 ? decoded.slice(colon + 1) : null;
  }
  return null;
}

/** Equal-length digests, so the comparison time says nothing about the token. */
function sameToken(a: string, b: string): boolean {
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(a), digest(b));
}

/** Returns a 401 response for a request that lacks the token its route's access needs, else
 * null. Writes use the put token, or the get token when only that one is set. The put token
 * also reads: a builder pushing with `nix copy --to` reads nix-cache-info and narinfos first,
 * and netrc gives it one password per host. The route comes from the one parsed path the
 * router also uses, so what is checked is what is served. */
export function createAuthGuard(opts: AuthOptions): (access: Access, req: Request) => Response | null {
  const readToken = opts.getToken || undefined;
  const writeToken = opts.putToken || readToken;
  const accepted: Record<Exclude<Access, "replica">, string[]> = {
    open: [],
    read: readToken ? [readToken, writeToken!] : [],
    write: writeToken ? [writeToken] : [],
  };
  return (access, req) => {
    if (access === "replica") return opts.replica?.(req) ? null : textResponse(401, "replica proof required");
    const tokens = accepted[access];
    if (tokens.length === 0) return null;
    const presented = presentedToken(req.headers.get("authorization"));
    if (presented !== null && tokens.some((token) => sameToken(presented, token))) return null;
    const res = textResponse(401, "authentication required");
    res.headers.append("www-authenticate", 'Bearer realm="ncps"');
    res.headers.append("www-authenticate", 'Basic realm="ncps"');
    return res;
  };
}
