/** Nix hash strings: "<algo>:<digest>" with the digest in nix32, hex or base64 (told apart
 * by length, as Nix does), and SRI "<algo>-<base64>". One canonical form for storage and
 * comparison: "<algo>:<nix32>", what narinfos and fingerprints use. */
import { NixFormatError } from "./errors.ts";
import { decodeNix32, encodeNix32 } from "./nix32.ts";

export type HashAlgorithm = "md5" | "sha1" | "sha256" | "sha512";
export interface Hash {
  algorithm: HashAlgorithm;
  digest: Uint8Array;
}
export type HashEncoding = "nix32" | "hex" | "base64" | "sri";

const DIGEST_LENGTH: Record<HashAlgorithm, number> = { md5: 16, sha1: 20, sha256: 32, sha512: 64 };

export function hashDigestLength(a: HashAlgorithm): number {
  return DIGEST_LENGTH[a];
}

function isHashAlgorithm(s: string): s is HashAlgorithm {
  return Object.hasOwn(DIGEST_LENGTH, s);
}

const HEX = /^[0-9a-fA-F]*$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function decodeHex(text: string): Uint8Array {
  if (!HEX.test(text)) throw new NixFormatError("hash: invalid base16 digest");
  return new Uint8Array(Buffer.from(text, "hex"));
}

/** Strict base64: standard alphabet, padded, and canonical (Buffer.from alone ignores junk). */
export function decodeBase64Strict(text: string, what: string): Uint8Array {
  if (text.length % 4 !== 0 || !BASE64.test(text)) throw new NixFormatError(`${what}: invalid base64`);
  const bytes = Buffer.from(text, "base64");
  if (bytes.toString("base64") !== text) throw new NixFormatError(`${what}: invalid base64`);
  return new Uint8Array(bytes);
}

export function encodeBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

function decodeDigest(text: string, algorithm: HashAlgorithm): Uint8Array {
  const size = DIGEST_LENGTH[algorithm];
  const nix32Length = Math.ceil((size * 8) / 5);
  const base64Length = Math.ceil(size / 3) * 4;
  if (text.length === size * 2) return decodeHex(text);
  if (text.length === nix32Length) return decodeNix32(text);
  if (text.length === base64Length) {
    // An unpadded 44-char text is valid base64 of 33 bytes: check the decoded size too.
    const digest = decodeBase64Strict(text, "hash");
    if (digest.length === size) return digest;
  }
  throw new NixFormatError(`hash: digest of length ${text.length} is not a ${algorithm} digest`);
}

function algorithmOf(name: string, expected: HashAlgorithm | undefined): HashAlgorithm {
  if (!isHashAlgorithm(name)) throw new NixFormatError(`hash: unknown algorithm ${JSON.stringify(name.slice(0, 16))}`);
  if (expected !== undefined && name !== expected) {
    throw new NixFormatError(`hash: expected a ${expected} hash, got ${name}`);
  }
  return name;
}

export function parseHash(text: string, expected?: HashAlgorithm): Hash {
  const colon = text.indexOf(":");
  if (colon >= 0) {
    const algorithm = algorithmOf(text.slice(0, colon), expected);
    return { algorithm, digest: decodeDigest(text.slice(colon + 1), algorithm) };
  }
  const dash = text.indexOf("-");
  if (dash >= 0) {
    const algorithm = algorithmOf(text.slice(0, dash), expected);
    const digest = decodeBase64Strict(text.slice(dash + 1), "hash");
    if (digest.length !== DIGEST_LENGTH[algorithm]) {
      throw new NixFormatError(`hash: SRI digest has ${digest.length} bytes, ${algorithm} has ${DIGEST_LENGTH[algorithm]}`);
    }
    return { algorithm, digest };
  }
  if (expected === undefined) throw new NixFormatError("hash: missing algorithm prefix");
  return { algorithm: expected, digest: decodeDigest(text, expected) };
}

export function formatHash(hash: Hash, encoding: HashEncoding = "nix32"): string {
  switch (encoding) {
    case "nix32":
      return `${hash.algorithm}:${encodeNix32(hash.digest)}`;
    case "hex":
      return `${hash.algorithm}:${Buffer.from(hash.digest).toString("hex")}`;
    case "base64":
      return `${hash.algorithm}:${encodeBase64(hash.digest)}`;
    case "sri":
      return `${hash.algorithm}-${encodeBase64(hash.digest)}`;
  }
}

export function canonicalHash(text: string, expected?: HashAlgorithm): string {
  return formatHash(parseHash(text, expected), "nix32");
}

export function sha256(bytes: Uint8Array | string): Hash {
  const hasher = new Bun.CryptoHasher("sha256");
  hasher.update(bytes);
  return { algorithm: "sha256", digest: new Uint8Array(hasher.digest()) };
}
