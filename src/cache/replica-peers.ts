/** Replicas streaming a NAR in flight from each other. The download claim (a lock in Redis)
 * names the URL its holder advertises; a replica waiting on that claim streams the NAR from
 * the holder's internal route instead of waiting for it to be stored.
 *
 * Redis is shared infrastructure, not a trusted party: a claim is only followed when it
 * carries a MAC made with the replicas' shared secret over the NAR key and the URL, so a
 * value written into Redis by anyone else never makes a replica send a request anywhere.
 * The same secret authorises the request on the holder's route (a MAC over the method, the
 * path naming the NAR and a time, good for a minute), so the route needs no read token and
 * opens nothing to clients.
 * The secret is derived from the signing key, which replicas already share (they serve one
 * database's narinfos under one key): nothing new to configure or to leak. */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { SecretKey } from "../nix/signature.ts";

/** The holder's route: `${REPLICA_PREFIX}<NAR key>` ("/_ncps/replica/nar/<hash>.nar<ext>")
 * answers a download in flight there, and nothing else. */
export const REPLICA_PREFIX = "/_ncps/replica/";
const AUTH_SCHEME = "NcpsReplica";
/** How old a request's proof may be. Within it the exact same request can be replayed, which
 * gives nothing away: the proof names its method and the NAR's path, so it answers that one
 * NAR (content-addressed, and only while it downloads here) and no other. */
const REQUEST_WINDOW_MS = 60_000;
/** How far ahead of ours a request's time may be: replicas' clocks are assumed synchronised
 * (NTP) to a few seconds. One further ahead is refused, so a proof cannot be made to last
 * longer than the window by dating it in the future; its replica then waits for storage
 * instead of streaming from the holder (slower, not wrong). */
const FUTURE_SKEW_MS = 5_000;
/** "NcpsReplica <ms since the epoch>.<base64url MAC>" */
const PROOF = new RegExp(`^${AUTH_SCHEME} (\\d{1,15})\\.([A-Za-z0-9_-]{1,100})$`);

export class ReplicaPeers {
  private readonly secret: Buffer;

  constructor(
    signingKey: SecretKey,
    /** the URL other replicas reach this one at (--cache-advertise-url), once listening */
    private readonly advertised: () => string,
  ) {
    this.secret = createHash("sha256").update("ncps replica secret v1\0").update(signingKey.raw).digest();
  }

  get advertiseUrl(): string {
    return this.advertised();
  }

  private mac(...parts: string[]): Buffer {
    return createHmac("sha256", this.secret).update(parts.join("\n")).digest();
  }

  private static same(a: Buffer, b: Buffer): boolean {
    return a.length === b.length && timingSafeEqual(a, b);
  }

  /** What this replica's claim on a download records: its URL, and the MAC binding the URL to
   * this NAR. */
  claimNote(narKey: string): string {
    return `${this.advertiseUrl} ${this.mac("claim", narKey, this.advertiseUrl).toString("base64url")}`;
  }

  /** The URL a claim note names, when a replica holding the secret wrote it for this NAR and
   * it is not this replica's own; else null (a crafted or foreign note, or no note). */
  holderUrl(narKey: string, note: string | null): string | null {
    if (note === null) return null;
    const space = note.lastIndexOf(" ");
    if (space < 0) return null;
    const url = note.slice(0, space);
    const presented = Buffer.from(note.slice(space + 1), "base64url");
    if (!ReplicaPeers.same(presented, this.mac("claim", narKey, url))) return null;
    return url === this.advertiseUrl ? null : url;
  }

  /** GET the holder's in-flight copy of a NAR, authorised with the shared secret. Redirects
   * are not followed: the holder never sends one, and the request goes nowhere else. */
  fetchFromHolder(holderUrl: string, narKey: string, signal: AbortSignal, now = Date.now()): Promise<Response> {
    const url = new URL(`${holderUrl.replace(/\/$/, "")}${REPLICA_PREFIX}${narKey}`);
    return fetch(url, { headers: { authorization: this.requestProof("GET", url.pathname, now) }, signal, redirect: "manual" });
  }

  /** The Authorization value for one request to the route: a MAC over its method, its path
   * (which names the NAR) and the time. */
  requestProof(method: string, pathname: string, now = Date.now()): string {
    const time = String(now);
    return `${AUTH_SCHEME} ${time}.${this.mac("request", method, pathname, time).toString("base64url")}`;
  }

  /** Whether a request to the route carries a fresh proof made with the shared secret for
   * this method and this path. */
  authorises(req: Request, now = Date.now()): boolean {
    const header = req.headers.get("authorization") ?? "";
    const m = PROOF.exec(header);
    if (!m) return false;
    const age = now - Number(m[1]);
    if (age > REQUEST_WINDOW_MS || age < -FUTURE_SKEW_MS) return false;
    let pathname: string;
    try {
      pathname = new URL(req.url).pathname;
    } catch {
      return false;
    }
    return ReplicaPeers.same(Buffer.from(m[2]!, "base64url"), this.mac("request", req.method, pathname, m[1]!));
  }
}
