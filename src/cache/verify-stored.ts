/** Re-read an object from storage through the NAR verifier: used before recording a NAR that
 * was uploaded, so only objects whose FileHash and NarHash check out are ever recorded. */
import { NarVerifier, type NarDigest, type NarExpectation } from "../nix/nar-verifier.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import { webStream } from "../streams.ts";

export async function verifyStoredNar(store: BlobStore, key: string, expect: NarExpectation): Promise<NarDigest> {
  const blob = await store.get(key);
  if (!blob) throw new Error(`NAR ${key} is not in storage`);
  return verifyStream(webStream(blob.body), expect);
}

/** A whole stream through the NAR verifier (`onNar` as NarVerifier's); rejects as it does. */
export async function verifyStream(body: ReadableStream<Uint8Array>, expect: NarExpectation, onNar?: (bytes: Uint8Array) => void): Promise<NarDigest> {
  const verifier = new NarVerifier(expect, onNar);
  try {
    for await (const chunk of body) await verifier.write(chunk);
    return await verifier.end();
  } catch (err) {
    verifier.abort();
    throw err;
  }
}
