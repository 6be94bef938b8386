/** A static binary cache on disk holding one signed narinfo and its uncompressed NAR of
 * random bytes: what the hit benchmarks put nginx (and behind it ncps) in front of. */
import { publishNar, upstreamPublicKey } from "./publish-nar.ts";

export interface FixtureCache {
  cacheDir: string;
  /** the narinfo's hash part: `<cacheDir>/<storeHash>.narinfo` */
  storeHash: string;
  /** the NAR's path relative to the cache, as the narinfo's URL names it */
  narUrl: string;
  /** the upstream key that signed the narinfo, as --cache-upstream-public-key takes it */
  publicKey: string;
}

export async function fixtureCache(cacheDir: string, narBytes: number): Promise<FixtureCache> {
  const { storeHash, narUrl } = await publishNar(cacheDir, { name: "bench", bytes: crypto.getRandomValues(new Uint8Array(narBytes)) });
  return { cacheDir, storeHash, narUrl, publicKey: upstreamPublicKey };
}
