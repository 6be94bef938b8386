/** NAR URLs: the shapes upstream caches publish in a narinfo `URL` field, the keys ncps
 * publishes itself, and the strict gate for incoming `/nar/...` requests. */
import { compressionExtension, compressionFromExtension, type Compression } from "./compression.ts";
import { NixFormatError } from "./errors.ts";
import { parseHash } from "./hash.ts";
import { NIX32_ALPHABET, decodeNix32, encodeNix32 } from "./nix32.ts";

export interface NarUrl {
  /** The URL without its query: relative ("nar/x.nar.xz") or an absolute http(s) URL, as given. */
  path: string;
  /** "" or "?...", kept verbatim: some upstreams need it to find the NAR (harmonia's ?hash=). */
  query: string;
  /** The NAR or file sha256 the file name carries (52 nix32 or 64 hex, as written), else null. */
  hash: string | null;
  /** From the file extension. Only a hint (attic serves zstd NARs as bare ".nar"): the narinfo
   * `Compression` field decides. null when there is no compression extension. */
  compression: Compression | null;
}

const NIX32 = `[${NIX32_ALPHABET}]`;
const SHA256_PART = `(?:${NIX32}{52}|[0-9a-f]{64})`;
const EXTENSIONS = `(?:\\.xz|\\.zst|\\.bz2|\\.br|\\.lzip|\\.lz4|\\.gz)`;

/** nar/<sha256>.nar[.ext]: Nix's own shape (FileHash), harmonia's (NarHash, with ?hash=<store
 * hash>), cachix's, and ncps's. */
const HASH_NAME = new RegExp(`^(${SHA256_PART})\\.nar(${EXTENSIONS})?$`);
/** nix-serve: nar/<store path hash>-<NarHash nix32>.nar */
const NIX_SERVE_NAME = new RegExp(`^${NIX32}{32}-(${NIX32}{52})\\.nar(${EXTENSIONS})?$`);
/** Anything else ending in .nar[.ext] (attic's nar/<store hash>.nar, cachix uuids...). */
const OTHER_NAR_NAME = new RegExp(`^.+\\.nar(${EXTENSIONS})?$`);

// C0 controls, space, DEL, backslash, fragment marker: none belongs in a NAR URL, and each
// could smuggle something past a later consumer (log lines, Windows-style paths, fetch).
const FORBIDDEN = /[\u0000-\u0020\u007f\\#]/;
const MAX_URL_LENGTH = 4096;

/** One path segment, checked after percent-decoding so "%2e%2e" and "%2f" cannot hide. */
function checkSegment(segment: string): void {
  if (segment === "") throw new NixFormatError("NAR URL has an empty path segment", "URL");
  let decoded: string;
  try {
    decoded = decodeURIComponent(segment);
  } catch {
    throw new NixFormatError("NAR URL has a malformed percent-encoding", "URL");
  }
  if (decoded === "." || decoded === "..") throw new NixFormatError("NAR URL contains a dot segment", "URL");
  if (/[/\\]/.test(decoded) || FORBIDDEN.test(decoded)) {
    throw new NixFormatError("NAR URL has an encoded separator or control character", "URL");
  }
}

function checkQuery(query: string): void {
  try {
    decodeURIComponent(query.replace(/\+/g, " "));
  } catch {
    throw new NixFormatError("NAR URL query has a malformed percent-encoding", "URL");
  }
}

/** Parses a narinfo `URL` value. Accepts every shape known upstreams publish; rejects what
 * could escape the cache's URL space or is not a URL at all. */
export function parseNarUrl(url: string): NarUrl {
  if (url === "") throw new NixFormatError("NAR URL is empty", "URL");
  if (url.length > MAX_URL_LENGTH) throw new NixFormatError("NAR URL is too long", "URL");
  if (FORBIDDEN.test(url)) throw new NixFormatError("NAR URL contains a forbidden character", "URL");

  const q = url.indexOf("?");
  const path = q < 0 ? url : url.slice(0, q);
  const query = q < 0 ? "" : url.slice(q);
  checkQuery(query);

  let segments: string[];
  const scheme = /^(https?):\/\/([^/]+)(\/.*)?$/i.exec(path);
  if (scheme) {
    try {
      new URL(path);
    } catch {
      throw new NixFormatError("NAR URL is not a valid absolute URL", "URL");
    }
    segments = (scheme[3] ?? "/").slice(1).split("/");
  } else if (/^[a-z][a-z0-9+.-]*:/i.test(path)) {
    throw new NixFormatError("NAR URL has an unsupported scheme", "URL");
  } else if (path.startsWith("/")) {
    throw new NixFormatError("NAR URL is an absolute path", "URL");
  } else {
    segments = path.split("/");
  }
  segments.forEach(checkSegment);

  const name = segments[segments.length - 1] ?? "";
  const direct = HASH_NAME.exec(name) ?? NIX_SERVE_NAME.exec(name);
  if (direct) {
    return { path, query, hash: direct[1] ?? null, compression: compressionFromExtension(direct[2] ?? "") };
  }
  const other = OTHER_NAR_NAME.exec(name);
  return { path, query, hash: null, compression: other ? compressionFromExtension(other[1] ?? "") : null };
}

/** Bare 52-nix32 / 64-hex digests are taken as sha256; anything else goes through parseHash. */
function sha256Digest(hash: string): Uint8Array {
  const text = hash.includes(":") || hash.includes("-") ? hash : `sha256:${hash}`;
  return parseHash(text, "sha256").digest;
}

/** The NAR key (and URL) ncps publishes: "nar/<nix32 sha256>.nar<ext>", one key per hash
 * whatever encoding the hash came in. */
export function ncpsNarKey(hash: string, compression: Compression): string {
  return `nar/${encodeNix32(sha256Digest(hash))}.nar${compressionExtension(compression)}`;
}

export interface NcpsNarRequest {
  /** Normalised key: "nar/<52 nix32>.nar<ext>". */
  key: string;
  /** The 52-char nix32 digest. */
  hashPart: string;
  compression: Compression;
}

const NCPS_REQUEST = new RegExp(`^nar/(${NIX32}{52}|[0-9a-f]{64})\\.nar(${EXTENSIONS})?$`);

/** The gate for incoming `/nar/...` requests: only ncps's own key shape (hex accepted and
 * normalised) passes, so nothing else reaches storage, the database or an upstream. A bare
 * ".nar" is an uncompressed NAR. */
export function parseNcpsNarRequest(pathAfterSlash: string): NcpsNarRequest {
  const m = NCPS_REQUEST.exec(pathAfterSlash);
  if (!m) {
    throw new NixFormatError(`not a NAR path: ${JSON.stringify(pathAfterSlash.slice(0, 120))}`, "path");
  }
  const digestText = m[1] ?? "";
  let hashPart: string;
  if (digestText.length === 64) {
    hashPart = encodeNix32(new Uint8Array(Buffer.from(digestText, "hex")));
  } else {
    decodeNix32(digestText); // rejects 52-char strings with bits beyond 256 set
    hashPart = digestText;
  }
  const compression = compressionFromExtension(m[2] ?? "") ?? "none";
  return { key: `nar/${hashPart}.nar${compressionExtension(compression)}`, hashPart, compression };
}
