/** Realisations: which store path a content-addressed derivation's output became, signed.
 *
 * Nix has named them two ways, both served here:
 * - `realisations/<drv hash>!<output>.doi` (Nix 2.8 to 2.34): the key is the derivation's
 *   hash modulo, `sha256:<64 hex>`; the document is
 *   `{"dependentRealisations":{..},"id":..,"outPath":..,"signatures":["name:base64"..]}`.
 * - `build-trace-v2/<drv>.drv/<output>.doi` (Nix 2.35 on, and the Go ncps's PUT): the key is
 *   the derivation's store path; Nix writes and reads `{"outPath":..,"signatures":[{"keyName",
 *   "sig"}..]}`, the Go ncps takes `{"key":{"drvPath","outputName"},"value":{..}}`.
 *
 * What a signature covers is Nix's fingerprint: the document, key included, without its
 * signatures, as nlohmann::json dumps it (keys in byte order, no spaces). Every string in it
 * is validated here to characters JSON.stringify writes exactly as nlohmann does, so the
 * fingerprint is rebuilt from parsed fields, never taken from the sender's bytes. */
import { NixFormatError } from "./errors.ts";
import { decodeBase64Strict } from "./hash.ts";
import { signFingerprint, trustedSignatures, type PublicKey, type SecretKey } from "./signature.ts";
import { parseStorePath, parseStorePathBaseName, STORE_DIR } from "./store-path.ts";

export type DrvOutput =
  /** Nix 2.8-2.34: `drvHash` is `sha256:<64 lowercase hex>` */
  | { kind: "realisation"; drvHash: string; outputName: string }
  /** build-trace-v2: `drvName` is the derivation's store path base name (`<hash>-<name>.drv`) */
  | { kind: "build-trace"; drvName: string; outputName: string };

export interface Realisation {
  id: DrvOutput;
  /** store path base name */
  outPath: string;
  /** "name:base64", sorted, no duplicates */
  signatures: string[];
  /** realisations only: drv output id (`sha256:..!out`) -> store path base name */
  dependentRealisations: Record<string, string>;
}

/** A realisation document is a few hundred bytes; a thousand dependencies fit in this. */
export const MAX_REALISATION_BYTES = 1024 * 1024;
const MAX_SIGNATURES = 64;
const SIGNATURE_BYTES = 64;
const DRV_HASH = /^sha256:[0-9a-f]{64}$/;
/** Output names become part of store path names (`<name>-<output>`): the same characters. */
const OUTPUT_NAME = /^[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]{0,210}$/;
const DOI = ".doi";

function checkOutputName(name: string): string {
  if (!OUTPUT_NAME.test(name)) throw new NixFormatError(`invalid output name ${JSON.stringify(name.slice(0, 80))}`, "path");
  return name;
}

/** `sha256:<hex>!<output>`, Nix's DrvOutput of 2.8-2.34. */
export function parseDrvOutputId(text: string): DrvOutput & { kind: "realisation" } {
  const bang = text.indexOf("!");
  if (bang < 0) throw new NixFormatError(`invalid derivation output id ${JSON.stringify(text.slice(0, 100))}: expected <drv hash>!<output>`);
  const drvHash = text.slice(0, bang);
  if (!DRV_HASH.test(drvHash)) throw new NixFormatError("invalid derivation hash: expected sha256: and 64 lowercase hex digits");
  return { kind: "realisation", drvHash, outputName: checkOutputName(text.slice(bang + 1)) };
}

/** The `<drv hash>!<output>.doi` of a realisations/ path. */
export function parseRealisationFileName(file: string): DrvOutput {
  if (!file.endsWith(DOI)) throw new NixFormatError("a realisation is named <drv hash>!<output>.doi", "path");
  return parseDrvOutputId(file.slice(0, -DOI.length));
}

/** The two segments of a build-trace-v2/ path; `.doi` on the output is optional, as in the
 * Go ncps (Nix sends it). */
export function parseBuildTraceTarget(drv: string, output: string): DrvOutput {
  if (!drv.endsWith(".drv")) throw new NixFormatError("a build trace is named by its derivation: <hash>-<name>.drv", "path");
  parseStorePathBaseName(drv);
  const outputName = output.endsWith(DOI) ? output.slice(0, -DOI.length) : output;
  return { kind: "build-trace", drvName: drv, outputName: checkOutputName(outputName) };
}

/** The one string naming a derivation output (the database key): `sha256:<hex>!out` or,
 * as Nix 2.35 writes a build trace key, `<drv>^out`. The two never collide. */
export function drvOutputId(id: DrvOutput): string {
  return id.kind === "realisation" ? `${id.drvHash}!${id.outputName}` : `${id.drvName}^${id.outputName}`;
}

/** Where a binary cache keeps it, relative to the cache's root. */
export function realisationPath(id: DrvOutput): string {
  return id.kind === "realisation" ? `realisations/${drvOutputId(id)}${DOI}` : `build-trace-v2/${id.drvName}/${id.outputName}${DOI}`;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function isObject(v: Json | undefined): v is { [key: string]: Json } {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function onlyKeys(obj: { [key: string]: Json }, allowed: string[], what: string) {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) throw new NixFormatError(`${what}: unexpected field ${JSON.stringify(key.slice(0, 40))}`);
  }
}

function stringField(obj: { [key: string]: Json }, key: string, what: string): string {
  const v = obj[key];
  if (typeof v !== "string") throw new NixFormatError(`${what}: ${key} must be a string`);
  return v;
}

/** A store path as Nix writes it in these documents (a base name), or as the Go ncps's
 * examples do (a full path): the base name. */
function storePathBaseName(text: string): string {
  return text.startsWith("/") ? parseStorePath(text).baseName : parseStorePathBaseName(text).baseName;
}

/** "name:base64(64 bytes)", the name free of whitespace and ':' (it must survive in the
 * JSON that is signed and in Nix's `name:sig` form alike). */
function checkSignature(sig: string): string {
  const colon = sig.indexOf(":");
  const name = sig.slice(0, colon);
  if (colon <= 0 || !/^[\x21-\x7e]+$/.test(name) || name.includes('"') || name.includes("\\")) {
    throw new NixFormatError(`invalid signature ${JSON.stringify(sig.slice(0, 40))}: expected "name:base64"`);
  }
  if (decodeBase64Strict(sig.slice(colon + 1), "signature").length !== SIGNATURE_BYTES) {
    throw new NixFormatError(`invalid signature by ${JSON.stringify(name)}: expected ${SIGNATURE_BYTES} bytes`);
  }
  return sig;
}

/** Signatures as strings (realisations, and Nix's reader of build traces accepts them too) or
 * as {keyName, sig} objects (build-trace-v2). */
function parseSignatures(v: Json | undefined, what: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new NixFormatError(`${what}: signatures must be a list`);
  if (v.length > MAX_SIGNATURES) throw new NixFormatError(`${what}: more than ${MAX_SIGNATURES} signatures`);
  const sigs = v.map((s) => {
    if (typeof s === "string") return checkSignature(s);
    if (isObject(s)) {
      onlyKeys(s, ["keyName", "sig"], `${what}: signature`);
      return checkSignature(`${stringField(s, "keyName", `${what}: signature`)}:${stringField(s, "sig", `${what}: signature`)}`);
    }
    throw new NixFormatError(`${what}: a signature must be a string or {keyName, sig}`);
  });
  return [...new Set(sigs)].sort();
}

function parseJson(text: string, what: string): Json {
  try {
    return JSON.parse(text) as Json;
  } catch {
    throw new NixFormatError(`${what}: not valid JSON`);
  }
}

/** A document for `id` as an uploader or an upstream sent it, validated field by field: an
 * id, drvPath or outputName naming another output than `id` is refused. */
export function parseRealisation(text: string, id: DrvOutput): Realisation {
  const what = id.kind === "realisation" ? "realisation" : "build trace";
  const doc = parseJson(text, what);
  if (!isObject(doc)) throw new NixFormatError(`${what}: expected a JSON object`);
  if (id.kind === "realisation") return parseNixRealisation(doc, id);
  // the Go ncps's keyed entry, or the bare value Nix sends
  if ("key" in doc || "value" in doc) {
    onlyKeys(doc, ["key", "value"], what);
    const key = doc.key;
    const value = doc.value;
    if (!isObject(key) || !isObject(value)) throw new NixFormatError(`${what}: key and value must be objects`);
    onlyKeys(key, ["drvPath", "outputName"], `${what}: key`);
    if (storePathBaseName(stringField(key, "drvPath", `${what}: key`)) !== id.drvName) {
      throw new NixFormatError(`${what}: key.drvPath does not name ${id.drvName}`);
    }
    if (stringField(key, "outputName", `${what}: key`) !== id.outputName) throw new NixFormatError(`${what}: key.outputName is not ${id.outputName}`);
    return parseBuildTraceValue(value, id, what);
  }
  return parseBuildTraceValue(doc, id, what);
}

function parseBuildTraceValue(value: { [key: string]: Json }, id: DrvOutput, what: string): Realisation {
  onlyKeys(value, ["outPath", "signatures"], what);
  return {
    id,
    outPath: storePathBaseName(stringField(value, "outPath", what)),
    signatures: parseSignatures(value.signatures, what),
    dependentRealisations: {},
  };
}

function parseNixRealisation(doc: { [key: string]: Json }, id: DrvOutput & { kind: "realisation" }): Realisation {
  const what = "realisation";
  onlyKeys(doc, ["id", "outPath", "signatures", "dependentRealisations"], what);
  if (stringField(doc, "id", what) !== drvOutputId(id)) throw new NixFormatError(`${what}: id is not ${drvOutputId(id)}`);
  const dependentRealisations: Record<string, string> = {};
  const deps = doc.dependentRealisations;
  if (deps !== undefined) {
    if (!isObject(deps)) throw new NixFormatError(`${what}: dependentRealisations must be an object`);
    for (const [dep, path] of Object.entries(deps)) {
      parseDrvOutputId(dep);
      if (typeof path !== "string") throw new NixFormatError(`${what}: dependentRealisations values must be store paths`);
      dependentRealisations[dep] = storePathBaseName(path);
    }
  }
  return { id, outPath: storePathBaseName(stringField(doc, "outPath", what)), signatures: parseSignatures(doc.signatures, what), dependentRealisations };
}

/** An object with its keys in byte order, as nlohmann::json (a std::map) holds them. */
function sortedObject<T>(entries: [string, T][]): Record<string, T> {
  return Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** A realisations/ document without its signatures, keys in nlohmann's order. */
function unsignedRealisation(r: Realisation) {
  return { dependentRealisations: sortedObject(Object.entries(r.dependentRealisations)), id: drvOutputId(r.id), outPath: r.outPath };
}

/** What Nix signs (UnkeyedRealisation::fingerprint / Realisation::fingerprint). */
export function realisationFingerprint(r: Realisation): string {
  if (r.id.kind === "realisation") return JSON.stringify(unsignedRealisation(r));
  return JSON.stringify({ key: { drvPath: r.id.drvName, outputName: r.id.outputName }, value: { outPath: r.outPath } });
}

/** The document served, in the form Nix reads back from a binary cache. */
export function renderRealisation(r: Realisation): string {
  if (r.id.kind === "realisation") return JSON.stringify({ ...unsignedRealisation(r), signatures: r.signatures });
  const signatures = r.signatures.map((sig) => {
    const colon = sig.indexOf(":");
    return { keyName: sig.slice(0, colon), sig: sig.slice(colon + 1) };
  });
  return JSON.stringify({ outPath: r.outPath, signatures });
}

/** `r` with `key`'s signature (replacing an older one of the same name). */
export function signRealisation(r: Realisation, key: SecretKey): Realisation {
  return { ...r, signatures: signFingerprint(realisationFingerprint(r), r.signatures, key).sort() };
}

/** The signatures of `r` that one of `trusted` verifies. */
export function trustedRealisationSignatures(r: Realisation, trusted: PublicKey[]): string[] {
  return trustedSignatures(realisationFingerprint(r), r.signatures, trusted);
}

/** The output's store path, for a message. */
export function outStorePath(r: Realisation): string {
  return `${STORE_DIR}/${r.outPath}`;
}
