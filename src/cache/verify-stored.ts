/** Re-read an object from storage through the NAR verifier: used before recording a NAR that
 * was uploaded, so only objects whose FileHash and NarHash check out are ever recorded. */
import { NarVerifier, type NarDigest, type NarExpectation } from "../nix/nar-verifier.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import { webStream } from "../streams.ts";

export async function verifyStoredNar(store: BlobStore, key: string, expect: NarExpectation): Promise<NarDigest> {
  const blob = await store.get(key);
  if (!blob) throw new Error(`NAR ${key} is not in storage`);
  const verifier = new NarVerifier(expect);
  const body = webStream(blob.body);
  try {
    for await (const chunk of body) await verifier.write(chunk);
    return await verifier.end();
  } catch (err) {
    verifier.abort();
    throw err;
  }
}
