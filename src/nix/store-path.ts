/** Store paths: "<storeDir>/<32-char nix32 hash>-<name>", with Nix's name rules. */
import { NixFormatError } from "./errors.ts";
import { NIX32_ALPHABET, isNix32 } from "./nix32.ts";

export const STORE_DIR = "/nix/store";

const HASH_PART_LENGTH = 32;
/** Nix limits names so that a base name fits in 255 bytes with room for ".drv"-style suffixes. */
const MAX_NAME_LENGTH = 211;
const NAME_CHARS = /^[A-Za-z0-9+\-._?=]+$/;
const HASH_PART = new RegExp(`^[${NIX32_ALPHABET}]{${HASH_PART_LENGTH}}$`);
const HEX_SHA256 = /^[0-9a-f]{64}$/;

/** The 32-char hash part of a store path (160 bits, so every such string decodes). */
export function isStorePathHash(s: string): boolean {
  return HASH_PART.test(s);
}

/** The digest part of a NAR file name: sha256 as 52 nix32 chars or 64 lowercase hex. */
export function isNarHashPart(s: string): boolean {
  if (s.length === 64) return HEX_SHA256.test(s);
  return s.length === 52 && isNix32(s);
}

export interface StorePathParts {
  hashPart: string;
  name: string;
  baseName: string;
}

function checkName(name: string, baseName: string): void {
  const shown = JSON.stringify(baseName.slice(0, 80));
  if (name.length === 0) throw new NixFormatError(`store path: empty name in ${shown}`);
  if (name.length > MAX_NAME_LENGTH) throw new NixFormatError(`store path: name longer than ${MAX_NAME_LENGTH} characters in ${shown}`);
  if (name.startsWith(".")) throw new NixFormatError(`store path: name starts with '.' in ${shown}`);
  if (!NAME_CHARS.test(name)) throw new NixFormatError(`store path: invalid character in name of ${shown}`);
}

export function parseStorePathBaseName(baseName: string): StorePathParts {
  const hashPart = baseName.slice(0, HASH_PART_LENGTH);
  if (!isStorePathHash(hashPart)) {
    throw new NixFormatError(`store path: invalid hash part in ${JSON.stringify(baseName.slice(0, 80))}`);
  }
  if (baseName[HASH_PART_LENGTH] !== "-") {
    throw new NixFormatError(`store path: expected '-' after the hash in ${JSON.stringify(baseName.slice(0, 80))}`);
  }
  const name = baseName.slice(HASH_PART_LENGTH + 1);
  checkName(name, baseName);
  return { hashPart, name, baseName };
}

export function parseStorePath(path: string, storeDir: string = STORE_DIR): StorePathParts {
  const prefix = `${storeDir}/`;
  if (!path.startsWith(prefix)) {
    throw new NixFormatError(`store path: ${JSON.stringify(path.slice(0, 80))} is not in ${storeDir}`);
  }
  // The name rules exclude '/', so a nested path fails in parseStorePathBaseName.
  return parseStorePathBaseName(path.slice(prefix.length));
}
