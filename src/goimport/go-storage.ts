/** Where the Go ncps keeps things in its storage (a local directory or an S3 bucket; the same
 * keys in both, kalbasit/ncps pkg/storage/{local,s3}): read through a BlobStore opened on it.
 *
 *   store/narinfo/<h>/<hh>/<hash>.narinfo    narinfo texts (all of them before v0.8)
 *   store/nar/<h>/<hh>/<hash>.nar[.<ext>]    NARs, <hash> from the narinfo URL's file name
 *   store/chunk/<h>/<hh>/<chunk hash>          CDC chunks, each zstd-compressed (v0.9 on)
 *   config/cache.key                          the signing key (before v0.6)
 *
 * where <h> and <hh> are the first one and two characters of the file name. */
import { NixFormatError } from "../nix/errors.ts";
import { parseHash } from "../nix/hash.ts";
import { encodeNix32, NIX32_ALPHABET } from "../nix/nix32.ts";

export const GO_SECRET_KEY_KEY = "config/cache.key";

const NIX32 = `[${NIX32_ALPHABET}]`;
/** A store path hash part, as Go validates narinfo hashes. */
const NARINFO_HASH = new RegExp(`^${NIX32}{32}$`);
/** Go's normalised NAR hash: 52 nix32 or 64 hex characters. */
const NAR_HASH = new RegExp(`^(?:${NIX32}{52}|[0-9a-f]{64})$`);
/** nix-serve's `<store hash>-<NarHash>` (or `_`), whose prefix Go strips (nar.URL.Normalize). */
const PREFIXED_NAR_HASH = new RegExp(`^${NIX32}{32}[-_](${NIX32}{52}|[0-9a-f]{64})$`);
/** The extensions Go maps to a compression (nar.CompressionTypeFromExtension). */
const GO_EXTENSIONS = new Set(["", "bz2", "zst", "lzip", "lz4", "br", "xz"]);

function sharded(fileName: string): string {
  return `${fileName.slice(0, 1)}/${fileName.slice(0, 2)}/${fileName}`;
}

export function goNarInfoKey(hash: string): string {
  if (!NARINFO_HASH.test(hash)) throw new NixFormatError(`not a store path hash: ${JSON.stringify(hash.slice(0, 64))}`);
  return `store/narinfo/${sharded(`${hash}.narinfo`)}`;
}

/** The storage key of the NAR a Go narinfo's URL names, as Go derives it: the file name's hash
 * (nix-serve prefix stripped) and extension. A URL whose name is no hash (cachix's uuids) was
 * stored under the NarHash (Go's ParseUpstreamURL). */
export function goNarKey(url: string, narHash: string): string {
  const path = url.split("?")[0]!;
  const fileName = path.slice(path.lastIndexOf("/") + 1);
  const at = fileName.indexOf(".nar");
  if (at <= 0) return `store/nar/${sharded(`${nix32NarHash(narHash)}.nar`)}`;
  const rest = fileName.slice(at + ".nar".length);
  if (rest !== "" && !rest.startsWith(".")) throw new NixFormatError(`NAR URL ${JSON.stringify(url.slice(0, 200))} has no NAR file name`);
  const extension = rest.slice(1);
  if (!GO_EXTENSIONS.has(extension)) throw new NixFormatError(`NAR URL ${JSON.stringify(url.slice(0, 200))} has an unknown compression extension`);
  let hash = fileName.slice(0, at);
  hash = PREFIXED_NAR_HASH.exec(hash)?.[1] ?? hash;
  if (!NAR_HASH.test(hash)) hash = nix32NarHash(narHash);
  return `store/nar/${sharded(`${hash}.nar${rest}`)}`;
}

/** A CDC chunk's key; the hash as the Go database lists it (hex). */
export function goChunkKey(hash: string): string {
  if (!/^[0-9a-z]{3,128}$/.test(hash)) throw new NixFormatError(`not a chunk hash: ${JSON.stringify(hash.slice(0, 64))}`);
  return `store/chunk/${sharded(hash)}`;
}

function nix32NarHash(narHash: string): string {
  return encodeNix32(parseHash(narHash, "sha256").digest);
}
