/** The one way a narinfo becomes the record ncps serves, whether it came from an upstream or
 * from an upload: URL pointing at ncps's NAR key, explicit Compression, signed by ncps (other
 * signatures kept), rendered once so a hit serves the text as it is. An uncompressed NAR's
 * narinfo keeps Compression: none, NarHash and NarSize, without FileHash and FileSize. */
import type { NarInfoRecord } from "../db/metadata-store.ts";
import type { Compression } from "../nix/compression.ts";
import { canonicalHash } from "../nix/hash.ts";
import { serializeNarInfo, type NarInfo } from "../nix/narinfo.ts";
import { signNarInfo, type SecretKey } from "../nix/signature.ts";

export interface Origin {
  /** upstream base URL, null for uploads */
  upstream: string | null;
  /** full upstream URL of the NAR, null for uploads */
  upstreamNarUrl: string | null;
}

export function narInfoRecord(
  hash: string,
  narinfo: NarInfo,
  nar: { key: string; compression: Compression },
  origin: Origin,
  signingKey: SecretKey | null,
): NarInfoRecord {
  let served: NarInfo = { ...narinfo, url: nar.key, compression: nar.compression };
  // An uncompressed NAR is stored zstd-compressed (stored-nars.ts): served as it is or
  // decompressed, depending on the client, so no FileHash or FileSize describes both.
  if (nar.compression === "none") served = { ...served, fileHash: undefined, fileSize: undefined };
  if (signingKey) served = signNarInfo(served, signingKey);
  return {
    hash,
    storePath: served.storePath,
    text: serializeNarInfo(served),
    narKey: nar.key,
    ...origin,
    compression: nar.compression,
    fileHash: served.fileHash ? canonicalHash(served.fileHash) : null,
    fileSize: served.fileSize ?? null,
    narHash: canonicalHash(served.narHash),
    narSize: served.narSize,
    references: served.references ?? [],
    createdAt: Date.now(),
  };
}
