/** Nix signing keys and narinfo signatures (ed25519).
 *
 * Keys are "name:base64": 64 bytes (seed || public key, libsodium's layout) for a secret
 * key, 32 bytes for a public key. A signature is "name:base64(64 bytes)" over the narinfo
 * fingerprint. A signature counts only under a trusted key of the same name, as in Nix.
 * ed25519 runs in node:crypto (measured ~15x faster than a JS implementation); KeyObjects
 * are built once per key and cached. */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { NixFormatError } from "./errors.ts";
import { canonicalHash, decodeBase64Strict, encodeBase64 } from "./hash.ts";
import type { NarInfo } from "./narinfo.ts";
import { STORE_DIR } from "./store-path.ts";

export interface SecretKey {
  name: string;
  /** 64 bytes: seed || public key, as Nix stores it. */
  raw: Uint8Array;
}
export interface PublicKey {
  name: string;
  /** 32 bytes. */
  raw: Uint8Array;
}

const SEED_BYTES = 32;
const PUBLIC_BYTES = 32;
const SECRET_BYTES = 64;
const SIGNATURE_BYTES = 64;

function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64url");
}

const privateKeyObjects = new WeakMap<Uint8Array, KeyObject>();
const publicKeyObjects = new WeakMap<Uint8Array, KeyObject>();

function privateKeyObject(k: SecretKey): KeyObject {
  let key = privateKeyObjects.get(k.raw);
  if (key === undefined) {
    const d = base64url(k.raw.subarray(0, SEED_BYTES));
    const x = base64url(k.raw.subarray(SEED_BYTES));
    key = createPrivateKey({ key: { kty: "OKP", crv: "Ed25519", d, x }, format: "jwk" });
    privateKeyObjects.set(k.raw, key);
  }
  return key;
}

function publicKeyObject(k: PublicKey): KeyObject {
  let key = publicKeyObjects.get(k.raw);
  if (key === undefined) {
    key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: base64url(k.raw) }, format: "jwk" });
    publicKeyObjects.set(k.raw, key);
  }
  return key;
}

/** Splits "name:base64" into a non-empty name and exactly `size` decoded bytes. */
function parseNamed(text: string, size: number, what: string): { name: string; raw: Uint8Array } {
  const trimmed = text.trim();
  const colon = trimmed.indexOf(":");
  if (colon <= 0) throw new NixFormatError(`${what}: expected "name:base64"`);
  const name = trimmed.slice(0, colon);
  if (/\s/.test(name)) throw new NixFormatError(`${what}: name contains whitespace`);
  const raw = decodeBase64Strict(trimmed.slice(colon + 1), what);
  if (raw.length !== size) throw new NixFormatError(`${what}: ${raw.length} bytes, expected ${size}`);
  return { name, raw };
}

function derivePublic(seed: Uint8Array): Uint8Array {
  // PKCS#8 wrapping of a bare ed25519 seed (RFC 8410), so the public half is computed, not trusted.
  const pkcs8 = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]);
  const x = createPublicKey(createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" })).export({ format: "jwk" }).x;
  return new Uint8Array(Buffer.from(x ?? "", "base64url"));
}

export function parseSecretKey(text: string): SecretKey {
  const { name, raw } = parseNamed(text, SECRET_BYTES, "secret key");
  // A secret key whose public half does not belong to its seed makes signatures nobody verifies.
  const expected = derivePublic(raw.subarray(0, SEED_BYTES));
  if (!Buffer.from(expected).equals(raw.subarray(SEED_BYTES))) {
    throw new NixFormatError("secret key: public half does not match the seed");
  }
  return { name, raw };
}

export function formatSecretKey(k: SecretKey): string {
  return `${k.name}:${encodeBase64(k.raw)}`;
}

export function parsePublicKey(text: string): PublicKey {
  return parseNamed(text, PUBLIC_BYTES, "public key");
}

export function formatPublicKey(k: PublicKey): string {
  return `${k.name}:${encodeBase64(k.raw)}`;
}

export function generateSecretKey(name: string): SecretKey {
  if (name === "" || name.includes(":") || /\s/.test(name)) {
    throw new NixFormatError(`secret key: invalid key name ${JSON.stringify(name.slice(0, 40))}`);
  }
  const jwk = generateKeyPairSync("ed25519").privateKey.export({ format: "jwk" });
  const raw = new Uint8Array(SECRET_BYTES);
  raw.set(Buffer.from(jwk.d ?? "", "base64url"), 0);
  raw.set(Buffer.from(jwk.x ?? "", "base64url"), SEED_BYTES);
  return { name, raw };
}

export function toPublicKey(k: SecretKey): PublicKey {
  return { name: k.name, raw: k.raw.slice(SEED_BYTES) };
}

/** What Nix signs: "1;<StorePath>;<NarHash as sha256:nix32>;<NarSize>;<references>", the
 * references as full store paths in sorted order (Nix holds them in a sorted set). */
export function narInfoFingerprint(ni: NarInfo, storeDir: string = STORE_DIR): string {
  const narHash = canonicalHash(ni.narHash, "sha256");
  const refs = (ni.references ?? []).map((ref) => `${storeDir}/${ref}`).sort();
  return `1;${ni.storePath};${narHash};${ni.narSize};${refs.join(",")}`;
}

function sigName(sig: string): string | undefined {
  const colon = sig.indexOf(":");
  return colon > 0 ? sig.slice(0, colon) : undefined;
}

/** "name:base64" signatures over `fingerprint`: any earlier one by `key`'s name replaced by
 * a fresh one (narinfos, realisations). */
export function signFingerprint(fingerprint: string, sigs: readonly string[], key: SecretKey): string[] {
  const signature = sign(null, Buffer.from(fingerprint), privateKeyObject(key));
  return [...sigs.filter((sig) => sigName(sig) !== key.name), `${key.name}:${signature.toString("base64")}`];
}

/** The signatures among `sigs` that a trusted key of the same name verifies over `fingerprint`. */
export function trustedSignatures(fingerprint: string, sigs: readonly string[], trusted: PublicKey[]): string[] {
  const fp = Buffer.from(fingerprint);
  return sigs.filter((sig) => verifiesUnder(fp, sig, trusted) !== undefined);
}

export function signNarInfo(ni: NarInfo, key: SecretKey): NarInfo {
  return { ...ni, sigs: signFingerprint(narInfoFingerprint(ni), ni.sigs, key) };
}

function verifiesUnder(fingerprint: Buffer, sig: string, trusted: PublicKey[]): string | undefined {
  const name = sigName(sig);
  if (name === undefined) return undefined;
  let signature: Uint8Array;
  try {
    signature = decodeBase64Strict(sig.slice(name.length + 1), "signature");
  } catch {
    return undefined; // an unreadable signature is just not a valid one
  }
  if (signature.length !== SIGNATURE_BYTES) return undefined;
  for (const key of trusted) {
    if (key.name === name && verify(null, fingerprint, publicKeyObject(key), signature)) return name;
  }
  return undefined;
}

export function verifiedSignerNames(ni: NarInfo, trusted: PublicKey[]): string[] {
  const fingerprint = Buffer.from(narInfoFingerprint(ni));
  const names = new Set<string>();
  for (const sig of ni.sigs) {
    const name = verifiesUnder(fingerprint, sig, trusted);
    if (name !== undefined) names.add(name);
  }
  return [...names];
}

export function verifyNarInfo(ni: NarInfo, trusted: PublicKey[]): boolean {
  const fingerprint = Buffer.from(narInfoFingerprint(ni));
  return ni.sigs.some((sig) => verifiesUnder(fingerprint, sig, trusted) !== undefined);
}
