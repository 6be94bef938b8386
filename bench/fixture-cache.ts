/** A static binary cache on disk holding one signed narinfo and its uncompressed NAR of
 * random bytes: what the hit benchmarks put nginx (and behind it ncps) in front of. */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { encodeNix32 } from "../src/nix/nix32.ts";
import { serializeNarInfo } from "../src/nix/narinfo.ts";
import { formatPublicKey, generateSecretKey, signNarInfo, toPublicKey } from "../src/nix/signature.ts";

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
  await mkdir(join(cacheDir, "nar"), { recursive: true });
  const nar = crypto.getRandomValues(new Uint8Array(narBytes));
  const narHash = `sha256:${encodeNix32(new Bun.CryptoHasher("sha256").update(nar).digest())}`;
  const storeHash = encodeNix32(crypto.getRandomValues(new Uint8Array(20)));
  const key = generateSecretKey("bench-upstream-1");
  const narinfo = signNarInfo(
    {
      storePath: `/nix/store/${storeHash}-bench`,
      url: `nar/${narHash.slice(7)}.nar`,
      compression: "none",
      fileHash: narHash,
      fileSize: nar.length,
      narHash,
      narSize: nar.length,
      references: [],
      sigs: [],
      extra: [],
    },
    key,
  );
  await Bun.write(join(cacheDir, narinfo.url), nar);
  await writeFile(join(cacheDir, `${storeHash}.narinfo`), serializeNarInfo(narinfo));
  await writeFile(join(cacheDir, "nix-cache-info"), "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n");
  return { cacheDir, storeHash, narUrl: narinfo.url, publicKey: formatPublicKey(toPublicKey(key)) };
}
