/** The .narinfo text format: "Key: value" lines, as Nix's NarInfo reads and writes them.
 *
 * Parsing is strict where Nix would fail later anyway (bad store paths, hashes, sizes) and
 * where a silent choice would hide a broken upstream (a repeated single-valued key: Nix keeps
 * the last one, we refuse). Unknown keys are kept, in order, and written back after the
 * known ones. Line ends: "\n"; a "\r\n" file is accepted too (one trailing "\r" is dropped
 * per line; Nix itself would choke on it inside the StorePath) and written back with "\n".
 * The last line may lack its "\n". Blank lines are refused, as Nix refuses them.
 *
 * Hash fields (NarHash, FileHash) must be sha256 (the fingerprint Nix signs requires it for
 * NarHash; every cache writes FileHash as sha256) in any encoding, and are kept exactly as
 * written so a narinfo serializes back byte for byte; canonicalHash() gives the nix32 form.
 * A missing Compression stays undefined here (Nix reads it as "bzip2"). */
import { NixFormatError } from "./errors.ts";
import { parseHash } from "./hash.ts";
import { parseStorePath, parseStorePathBaseName } from "./store-path.ts";

export interface NarInfo {
  storePath: string;
  url: string;
  compression?: string;
  fileHash?: string;
  fileSize?: number;
  narHash: string;
  narSize: number;
  /** Base names; undefined = no References line (cachix omits it), [] = line present but empty. */
  references?: string[];
  /** Base name, or "unknown-deriver" kept verbatim. */
  deriver?: string;
  system?: string;
  sigs: string[];
  ca?: string;
  /** Unknown keys, kept in order, written after the known ones. */
  extra: [string, string][];
}

export const UNKNOWN_DERIVER = "unknown-deriver";

/** Sig lines accepted in one narinfo: a real one has one per signing cache (cache.nixos.org's
 * have one or two); thousands are junk that would be stored and served as is. */
export const MAX_SIGS = 64;

const SIZE = /^[0-9]{1,16}$/;
const KEY = /^[^\s:]+$/;

function fail(field: string, problem: string): never {
  throw new NixFormatError(`narinfo: ${problem}`, field);
}

function parseSize(field: string, value: string): number {
  const n = SIZE.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n)) fail(field, `${field} is not a byte count: ${JSON.stringify(value.slice(0, 40))}`);
  return n;
}

function checkSha256(field: string, value: string): string {
  const { algorithm } = checkField(field, () => parseHash(value));
  if (algorithm !== "sha256") fail(field, `${field} is ${algorithm}, not sha256`);
  return value;
}

/** Runs a field check, re-labelling its error with the narinfo field it came from. */
function checkField<T>(field: string, check: () => T): T {
  try {
    return check();
  } catch (e) {
    if (e instanceof NixFormatError) fail(field, `bad ${field}: ${e.message}`);
    throw e;
  }
}

export function parseNarInfo(text: string): NarInfo {
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop(); // the final "\n" ends a line, it does not start one

  const seen = new Set<string>();
  const sigs: string[] = [];
  const extra: [string, string][] = [];
  const known: Partial<Omit<NarInfo, "sigs" | "extra">> = {};

  for (const rawLine of lines) {
    const line = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
    // A bare "\r" inside a line could not be written back as one line: refuse it here.
    if (line.includes("\r")) throw new NixFormatError("narinfo: carriage return inside a line");
    const sep = line.indexOf(": ");
    const key = sep > 0 ? line.slice(0, sep) : "";
    if (!KEY.test(key)) {
      throw new NixFormatError(`narinfo: line is not "Key: value": ${JSON.stringify(line.slice(0, 60))}`);
    }
    const value = line.slice(sep + 2);
    if (key !== "Sig" && seen.has(key)) fail(key, `duplicate ${key}`);
    seen.add(key);

    switch (key) {
      case "StorePath":
        checkField(key, () => parseStorePath(value));
        known.storePath = value;
        break;
      case "URL":
        if (value === "") fail(key, "empty URL");
        known.url = value;
        break;
      case "Compression":
        known.compression = value;
        break;
      case "FileHash":
        known.fileHash = checkSha256(key, value);
        break;
      case "FileSize":
        known.fileSize = parseSize(key, value);
        break;
      case "NarHash":
        known.narHash = checkSha256(key, value);
        break;
      case "NarSize":
        known.narSize = parseSize(key, value);
        if (known.narSize === 0) fail(key, "NarSize is 0");
        break;
      case "References":
        known.references = value
          .split(" ")
          .filter((ref) => ref !== "")
          .map((ref) => checkField(key, () => parseStorePathBaseName(ref)).baseName);
        break;
      case "Deriver":
        if (value !== UNKNOWN_DERIVER) checkField(key, () => parseStorePathBaseName(value));
        known.deriver = value;
        break;
      case "System":
        known.system = value;
        break;
      case "Sig":
        if (sigs.length >= MAX_SIGS) fail(key, `more than ${MAX_SIGS} Sig lines`);
        sigs.push(value);
        break;
      case "CA":
        known.ca = value;
        break;
      default:
        extra.push([key, value]);
    }
  }

  const { storePath, url, narHash, narSize } = known;
  if (storePath === undefined) fail("StorePath", "missing StorePath");
  if (url === undefined) fail("URL", "missing URL");
  if (narHash === undefined) fail("NarHash", "missing NarHash");
  if (narSize === undefined) fail("NarSize", "missing NarSize");
  return { ...known, storePath, url, narHash, narSize, sigs, extra };
}

function line(key: string, value: string): string {
  // A value with a line break would smuggle extra lines (a second StorePath, a forged Sig).
  if (/[\r\n]/.test(value)) fail(key, `${key} contains a line break`);
  return `${key}: ${value}\n`;
}

export function serializeNarInfo(ni: NarInfo): string {
  let out = line("StorePath", ni.storePath) + line("URL", ni.url);
  if (ni.compression !== undefined) out += line("Compression", ni.compression);
  if (ni.fileHash !== undefined) out += line("FileHash", ni.fileHash);
  if (ni.fileSize !== undefined) out += line("FileSize", String(ni.fileSize));
  out += line("NarHash", ni.narHash) + line("NarSize", String(ni.narSize));
  if (ni.references !== undefined) out += line("References", ni.references.join(" "));
  if (ni.deriver !== undefined) out += line("Deriver", ni.deriver);
  if (ni.system !== undefined) out += line("System", ni.system);
  for (const sig of ni.sigs) out += line("Sig", sig);
  if (ni.ca !== undefined) out += line("CA", ni.ca);
  for (const [key, value] of ni.extra) {
    if (!KEY.test(key)) fail(key, `invalid key ${JSON.stringify(key.slice(0, 40))}`);
    out += line(key, value);
  }
  return out;
}
