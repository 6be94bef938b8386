/** Who sent a request: the peer's address, or, when the peer is a configured trusted proxy, the
 * client it names in X-Forwarded-For (the right-most address that is not itself a trusted
 * proxy). A client talking to ncps directly cannot make the log name anyone else. */
import { isIP } from "node:net";

export class TrustedProxyError extends Error {
  override name = "TrustedProxyError";
}

/** One trusted proxy: an address or a CIDR range, IPv4 or IPv6. */
export interface AddressRange {
  bytes: Uint8Array;
  prefix: number;
}

/** IPv4 as 4 bytes, IPv6 (IPv4-mapped ones folded to IPv4) as 16; null when not an address. */
function addressBytes(text: string): Uint8Array | null {
  const plain = text.replace(/^\[(.*)\]$/, "$1");
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(plain);
  if (mapped) return addressBytes(mapped[1]!);
  const family = isIP(plain);
  if (family === 4) return Uint8Array.from(plain.split(".").map(Number));
  if (family !== 6) return null;
  const [head, tail] = plain.includes("::") ? plain.split("::") : [plain, undefined];
  const words = (s: string | undefined) => (s ? s.split(":") : []);
  const left = words(head);
  const right = words(tail);
  // an embedded IPv4 tail counts as two words
  const expand = (ws: string[]) => ws.flatMap((w) => (w.includes(".") ? (() => { const b = addressBytes(w)!; return [((b[0]! << 8) | b[1]!).toString(16), ((b[2]! << 8) | b[3]!).toString(16)]; })() : [w]));
  const l = expand(left);
  const r = expand(right);
  const all = tail === undefined ? l : [...l, ...Array(8 - l.length - r.length).fill("0"), ...r];
  const out = new Uint8Array(16);
  all.forEach((w, i) => {
    const n = parseInt(w, 16);
    out[2 * i] = n >> 8;
    out[2 * i + 1] = n & 0xff;
  });
  return out;
}

/** "10.0.0.1", "10.0.0.0/8", "fd00::/8". */
export function parseAddressRange(text: string): AddressRange {
  const [addr, prefixText, ...rest] = text.trim().split("/");
  const bytes = addressBytes(addr ?? "");
  if (!bytes || rest.length > 0) throw new TrustedProxyError(`"${text}" is not an IP address or CIDR range`);
  const max = bytes.length * 8;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!/^\d+$/.test(prefixText ?? String(max)) || prefix > max) throw new TrustedProxyError(`"${text}": prefix length must be 0-${max}`);
  return { bytes, prefix };
}

function inRange(bytes: Uint8Array, range: AddressRange): boolean {
  if (bytes.length !== range.bytes.length) return false;
  let bits = range.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((bytes[i]! & mask) !== (range.bytes[i]! & mask)) return false;
  }
  return true;
}

/** The client's address for logs and traces; `peer` is the TCP peer. */
export function clientAddress(peer: string, forwardedFor: string | null, trusted: readonly AddressRange[]): string {
  if (trusted.length === 0 || forwardedFor === null) return peer;
  const isTrusted = (addr: string) => {
    const bytes = addressBytes(addr);
    return bytes !== null && trusted.some((r) => inRange(bytes, r));
  };
  if (!isTrusted(peer)) return peer;
  const hops = forwardedFor.split(",").map((s) => s.trim()).filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i--) {
    if (!isTrusted(hops[i]!)) return addressBytes(hops[i]!) ? hops[i]! : peer;
  }
  return hops[0] ?? peer;
}
