/** nix-cache-info: the small "Key: value" file a binary cache serves at its root.
 * Parsed like Nix does (split at the first ':', trim both sides, WantMassQuery true only
 * for "1"); a missing StoreDir means the default /nix/store. Unknown keys go to `extra`.
 * Blank lines are skipped; a non-blank line without ':' is refused (it is not this format,
 * e.g. an HTML error page served in its place). */
import { NixFormatError } from "./errors.ts";
import { STORE_DIR } from "./store-path.ts";

export interface CacheInfo {
  storeDir: string;
  wantMassQuery: boolean;
  priority?: number;
  extra: [string, string][];
}

const PRIORITY = /^[0-9]{1,9}$/;

export function parseCacheInfo(text: string): CacheInfo {
  const info: CacheInfo = { storeDir: STORE_DIR, wantMassQuery: false, extra: [] };
  const seen = new Set<string>();
  for (const rawLine of text.split("\n")) {
    if (rawLine.trim() === "") continue;
    if (rawLine.trimEnd().includes("\r")) throw new NixFormatError("nix-cache-info: carriage return inside a line");
    const colon = rawLine.indexOf(":");
    if (colon < 0) {
      throw new NixFormatError(`nix-cache-info: line is not "Key: value": ${JSON.stringify(rawLine.slice(0, 60))}`);
    }
    const key = rawLine.slice(0, colon).trim();
    const value = rawLine.slice(colon + 1).trim();
    if (key === "") throw new NixFormatError("nix-cache-info: empty key");
    if (seen.has(key)) throw new NixFormatError(`nix-cache-info: duplicate ${key}`, key);
    seen.add(key);
    switch (key) {
      case "StoreDir":
        if (!value.startsWith("/")) throw new NixFormatError(`nix-cache-info: StoreDir is not absolute`, key);
        info.storeDir = value;
        break;
      case "WantMassQuery":
        info.wantMassQuery = value === "1";
        break;
      case "Priority":
        if (!PRIORITY.test(value)) {
          throw new NixFormatError(`nix-cache-info: Priority is not a number: ${JSON.stringify(value.slice(0, 40))}`, key);
        }
        info.priority = Number(value);
        break;
      default:
        info.extra.push([key, value]);
    }
  }
  return info;
}

function line(key: string, value: string): string {
  if (/[\r\n]/.test(key + value) || key.includes(":") || key.trim() !== key || key === "") {
    throw new NixFormatError(`nix-cache-info: cannot write ${JSON.stringify(key.slice(0, 40))}`, key);
  }
  return `${key}: ${value}\n`;
}

export function serializeCacheInfo(ci: CacheInfo): string {
  let out = line("StoreDir", ci.storeDir) + line("WantMassQuery", ci.wantMassQuery ? "1" : "0");
  if (ci.priority !== undefined) out += line("Priority", String(ci.priority));
  for (const [key, value] of ci.extra) out += line(key, value);
  return out;
}
