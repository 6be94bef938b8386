/** Nix's own base32 ("nix32"): a 32-letter alphabet without e, o, t, u, and a bit order
 * that reads the digest from its last 5-bit group backwards (as Nix's printHash32 does),
 * so it is NOT RFC 4648 base32 and no library implements it. */
import { NixFormatError } from "./errors.ts";

export const NIX32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz";

/** Character code -> digit value, -1 for characters outside the alphabet. */
const DIGIT_OF = new Int8Array(128).fill(-1);
for (let i = 0; i < NIX32_ALPHABET.length; i++) DIGIT_OF[NIX32_ALPHABET.charCodeAt(i)] = i;

function encodedLength(byteLength: number): number {
  return Math.ceil((byteLength * 8) / 5);
}

export function encodeNix32(bytes: Uint8Array): string {
  const length = encodedLength(bytes.length);
  let out = "";
  for (let n = length - 1; n >= 0; n--) {
    const bit = n * 5;
    const i = bit >> 3;
    const j = bit & 7;
    const low = (bytes[i] ?? 0) >> j;
    const high = i + 1 < bytes.length ? (bytes[i + 1] ?? 0) << (8 - j) : 0;
    out += NIX32_ALPHABET[(low | high) & 0x1f];
  }
  return out;
}

/** Decodes nix32 text; the byte length follows from the text length. Rejects lengths no
 * byte string encodes to, characters outside the alphabet, and set bits beyond the end. */
export function decodeNix32(text: string): Uint8Array {
  const size = Math.floor((text.length * 5) / 8);
  if (encodedLength(size) !== text.length) {
    throw new NixFormatError(`nix32: invalid length ${text.length}`);
  }
  const bytes = new Uint8Array(size);
  for (let n = 0; n < text.length; n++) {
    const code = text.charCodeAt(text.length - n - 1);
    const digit = code < 128 ? (DIGIT_OF[code] ?? -1) : -1;
    if (digit < 0) {
      throw new NixFormatError(`nix32: invalid character ${JSON.stringify(text[text.length - n - 1])}`);
    }
    const bit = n * 5;
    const i = bit >> 3;
    const j = bit & 7;
    bytes[i] = (bytes[i] ?? 0) | ((digit << j) & 0xff);
    const carry = digit >> (8 - j);
    if (i + 1 < size) bytes[i + 1] = (bytes[i + 1] ?? 0) | carry;
    else if (carry !== 0) throw new NixFormatError("nix32: nonzero bits beyond the digest");
  }
  return bytes;
}

export function isNix32(text: string): boolean {
  try {
    decodeNix32(text);
    return true;
  } catch {
    return false;
  }
}
