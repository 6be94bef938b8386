/** Bounded fuzzing of every parser in src/nix: random strings and mutated real inputs must
 * either parse or throw NixFormatError, never another error. A seeded PRNG makes any
 * failure reproducible: the report names the seed and iteration. Set NCPS_FUZZ_SEED and
 * NCPS_FUZZ_ITERATIONS to explore further. */
import { FIXTURES_DIR } from "../helpers/fixtures.ts";
import { seededRandom } from "../helpers/seeded-random.ts";
import { expect, test } from "bun:test";
import { readFileSync, readdirSync } from "node:fs";
import { parseCacheInfo, serializeCacheInfo, type CacheInfo } from "../../src/nix/cache-info.ts";
import { NixFormatError } from "../../src/nix/errors.ts";
import { canonicalHash, formatHash, parseHash, type Hash } from "../../src/nix/hash.ts";
import { parseNarInfo, serializeNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { decodeNix32, encodeNix32 } from "../../src/nix/nix32.ts";
import {
  formatPublicKey,
  formatSecretKey,
  generateSecretKey,
  parsePublicKey,
  parseSecretKey,
  toPublicKey,
  type PublicKey,
  type SecretKey,
} from "../../src/nix/signature.ts";
import { parseStorePath, type StorePathParts } from "../../src/nix/store-path.ts";

const FIXTURES = process.env.NCPS_NARINFO_FIXTURES ?? FIXTURES_DIR;
const SEED = Number(process.env.NCPS_FUZZ_SEED ?? 0x5eed1234);
const ITERATIONS = Number(process.env.NCPS_FUZZ_ITERATIONS ?? 20_000);

const narinfos = readdirSync(FIXTURES)
  .filter((f) => f.endsWith(".narinfo"))
  .sort()
  .map((f) => readFileSync(`${FIXTURES}/${f}`, "utf8"));
const fixedKey = generateSecretKey("fuzz-1");
const CORPUS = [
  ...narinfos,
  ...narinfos.flatMap((t) => t.split("\n").map((l) => l.slice(l.indexOf(": ") + 2))), // bare field values
  "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
  "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
  "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
  "md5:900150983cd24fb0d6963f7d28e17f72",
  "/nix/store/1gxz5nfzfnhyxjdyzi04r86sh61y4i00-hello-2.12.1",
  formatSecretKey(fixedKey),
  formatPublicKey(toPublicKey(fixedKey)),
];
const ALPHABET = "0123456789abcdfghijklmnpqrsvwxyzeotuABCDEFXYZ+/=_-.?:; \n\r\t\0/\u00e9\u{1f600}";

type Rng = () => number;
const int = (rng: Rng, n: number) => Math.floor(rng() * n);
const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[int(rng, xs.length)]!;

function randomString(rng: Rng): string {
  let s = "";
  const length = int(rng, 160);
  for (let i = 0; i < length; i++) s += pick(rng, [...ALPHABET]);
  return s;
}

function mutateLines(rng: Rng, text: string): string {
  const lines = text.split("\n");
  const i = int(rng, lines.length);
  switch (int(rng, 4)) {
    case 0:
      lines.splice(i, 1); // drop
      break;
    case 1:
      lines.splice(i, 0, lines[int(rng, lines.length)]!); // duplicate
      break;
    case 2: {
      const j = int(rng, lines.length); // swap
      [lines[i], lines[j]] = [lines[j]!, lines[i]!];
      break;
    }
    default:
      lines[i] = randomString(rng); // replace with noise
  }
  return lines.join("\n");
}

function mutate(rng: Rng, text: string): string {
  let out = text;
  // Some inputs stay intact so every parser's success path (and its property) runs too.
  const rounds = rng() < 0.1 ? 0 : 1 + int(rng, 3);
  for (let r = 0; r < rounds; r++) {
    const at = int(rng, out.length + 1);
    switch (int(rng, 5)) {
      case 0: {
        // flip one bit of one byte, through UTF-8 so invalid sequences appear too
        const bytes = Buffer.from(out);
        if (bytes.length > 0) bytes[int(rng, bytes.length)]! ^= 1 << int(rng, 8);
        out = bytes.toString("utf8");
        break;
      }
      case 1:
        out = out.slice(0, at); // truncate
        break;
      case 2:
        out = out.slice(0, at) + pick(rng, [...ALPHABET]) + out.slice(at); // insert
        break;
      case 3:
        out = out.slice(0, at) + out.slice(at + 1 + int(rng, 8)); // delete a run
        break;
      default:
        out = mutateLines(rng, out);
    }
  }
  return out;
}

/** Each parser, and a property its result must have. The property runs outside the
 * NixFormatError allowance: once a parser accepted an input, writing it back must not fail. */
const TARGETS: [string, (input: string) => unknown, (parsed: never, input: string) => void][] = [
  ["parseNarInfo", parseNarInfo, (ni: NarInfo) => expect(parseNarInfo(serializeNarInfo(ni))).toEqual(ni)],
  ["parseHash", (s) => parseHash(s), (h: Hash) => expect(canonicalHash(formatHash(h, "sri"))).toBe(formatHash(h))],
  ["parseHash(sha256)", (s) => parseHash(s, "sha256"), (h: Hash) => expect(h.digest.length).toBe(32)],
  ["decodeNix32", decodeNix32, (bytes: Uint8Array, s) => expect(encodeNix32(bytes)).toBe(s)],
  ["parseStorePath", (s) => parseStorePath(s), (p: StorePathParts, s) => expect(`/nix/store/${p.baseName}`).toBe(s)],
  ["parseSecretKey", parseSecretKey, (k: SecretKey) => expect(parseSecretKey(formatSecretKey(k))).toEqual(k)],
  ["parsePublicKey", parsePublicKey, (k: PublicKey, s) => expect(formatPublicKey(k)).toBe(s.trim())],
  ["parseCacheInfo", parseCacheInfo, (ci: CacheInfo) => expect(parseCacheInfo(serializeCacheInfo(ci))).toEqual(ci)],
];

test(
  `parsers return or throw NixFormatError on ${ITERATIONS} random and mutated inputs (seed ${SEED})`,
  () => {
    const rng = seededRandom(SEED);
    const accepted = new Map<string, number>();
    for (let iteration = 0; iteration < ITERATIONS; iteration++) {
      const input = rng() < 0.25 ? randomString(rng) : mutate(rng, pick(rng, CORPUS));
      const where = () => `on iteration ${iteration} (seed ${SEED}) for input ${JSON.stringify(input)}`;
      for (const [name, parse, property] of TARGETS) {
        let parsed: unknown;
        try {
          parsed = parse(input);
        } catch (e) {
          if (e instanceof NixFormatError) continue;
          throw new Error(`${name} threw ${String(e)} ${where()}`);
        }
        accepted.set(name, (accepted.get(name) ?? 0) + 1);
        try {
          property(parsed as never, input);
        } catch (e) {
          throw new Error(`${name} accepted but its result broke: ${String(e)} ${where()}`);
        }
      }
    }
    // The mutations must leave some inputs valid, or the success properties were never checked.
    for (const [name] of TARGETS) expect(accepted.get(name) ?? 0).toBeGreaterThan(10);
  },
  120_000,
);

test("the fuzz corpus itself parses (so mutations start from valid inputs)", () => {
  for (const text of narinfos) expect(() => parseNarInfo(text)).not.toThrow();
  expect(parseSecretKey(formatSecretKey(fixedKey))).toEqual(fixedKey);
});
