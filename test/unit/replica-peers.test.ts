/** The proof one replica sends another's internal NAR route: it answers only the method, the
 * NAR path and the moment it was made for. */
import { describe, expect, test } from "bun:test";
import { REPLICA_PREFIX, ReplicaPeers } from "../../src/cache/replica-peers.ts";
import { generateSecretKey } from "../../src/nix/signature.ts";

const key = generateSecretKey("ncps-ha");
const holder = new ReplicaPeers(key, () => "http://holder:8501");
const asker = new ReplicaPeers(key, () => "http://asker:8501");
const pathA = `${REPLICA_PREFIX}nar/${"a".repeat(52)}.nar`;
const pathB = `${REPLICA_PREFIX}nar/${"b".repeat(52)}.nar`;
const now = 1_800_000_000_000;

function request(path: string, authorization: string, method = "GET"): Request {
  return new Request(`http://holder:8501${path}`, { method, headers: { authorization } });
}

describe("a replica request proof", () => {
  test("is accepted for the request it was made for", () => {
    expect(holder.authorises(request(pathA, asker.requestProof("GET", pathA, now)), now)).toBe(true);
  });

  test("made for one NAR is refused for another", () => {
    expect(holder.authorises(request(pathB, asker.requestProof("GET", pathA, now)), now)).toBe(false);
  });

  test("made for GET is refused for another method", () => {
    expect(holder.authorises(request(pathA, asker.requestProof("GET", pathA, now), "HEAD"), now)).toBe(false);
  });

  test("is refused once older than a minute", () => {
    const proof = asker.requestProof("GET", pathA, now - 60_000);
    expect(holder.authorises(request(pathA, proof), now)).toBe(true);
    expect(holder.authorises(request(pathA, proof), now + 1)).toBe(false);
  });

  test("dated in the future is refused beyond a few seconds of clock skew", () => {
    expect(holder.authorises(request(pathA, asker.requestProof("GET", pathA, now + 5_000)), now)).toBe(true);
    expect(holder.authorises(request(pathA, asker.requestProof("GET", pathA, now + 5_001)), now)).toBe(false);
    expect(holder.authorises(request(pathA, asker.requestProof("GET", pathA, now + 59_000)), now)).toBe(false);
  });

  test("made with another signing key is refused", () => {
    const foreign = new ReplicaPeers(generateSecretKey("other"), () => "http://asker:8501");
    expect(holder.authorises(request(pathA, foreign.requestProof("GET", pathA, now)), now)).toBe(false);
  });
});
