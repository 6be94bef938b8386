import { FIXTURES_DIR } from "../helpers/fixtures.ts";
import { describe, expect, test } from "bun:test";
import { readFileSync, readdirSync } from "node:fs";
import { NixFormatError } from "../../src/nix/errors.ts";
import { formatHash, parseHash } from "../../src/nix/hash.ts";
import { parseNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import {
  formatPublicKey,
  formatSecretKey,
  generateSecretKey,
  narInfoFingerprint,
  parsePublicKey,
  parseSecretKey,
  signNarInfo,
  toPublicKey,
  verifiedSignerNames,
  verifyNarInfo,
} from "../../src/nix/signature.ts";

const FIXTURES = process.env.NCPS_NARINFO_FIXTURES ?? FIXTURES_DIR;
const fixtureNames = readdirSync(FIXTURES).filter((f) => f.endsWith(".narinfo")).sort();
const fixture = (hash: string) => parseNarInfo(readFileSync(`${FIXTURES}/${hash}.narinfo`, "utf8"));

const PUBLISHED = [
  parsePublicKey("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="),
  parsePublicKey("nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs="),
];

// RFC 8032 section 7.1, test 1: seed and public key.
const RFC_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const RFC_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const rfcSecretText = `rfc-1:${Buffer.from(RFC_SEED + RFC_PUBLIC, "hex").toString("base64")}`;

function flipBitInSig(sig: string, bit: number): string {
  const colon = sig.indexOf(":");
  const bytes = Buffer.from(sig.slice(colon + 1), "base64");
  bytes[bit >> 3]! ^= 1 << (bit & 7);
  return `${sig.slice(0, colon)}:${bytes.toString("base64")}`;
}

describe("signatures", () => {
  test.each(fixtureNames)("%s verifies with the published keys", (name) => {
    const ni = parseNarInfo(readFileSync(`${FIXTURES}/${name}`, "utf8"));
    expect(verifyNarInfo(ni, PUBLISHED)).toBe(true);
    expect(verifiedSignerNames(ni, PUBLISHED).length).toBe(1);
    expect(verifyNarInfo(ni, [])).toBe(false);
  });

  test("the fingerprint is Nix's", () => {
    expect(narInfoFingerprint(fixture("1gxz5nfzfnhyxjdyzi04r86sh61y4i00"))).toBe(
      "1;/nix/store/1gxz5nfzfnhyxjdyzi04r86sh61y4i00-hello-2.12.1;sha256:1fivi78qzgq3xlm3z59lia9qxw0idwaqmf3ffam83p4392biy5jy;226504;" +
        "/nix/store/1gxz5nfzfnhyxjdyzi04r86sh61y4i00-hello-2.12.1,/nix/store/vnwdak3n1w2jjil119j65k8mw1z23p84-glibc-2.35-224",
    );
    const cachix = fixture("yj1wxm9hh8610iyzqnz75kvs6xl8j3my");
    expect(narInfoFingerprint(cachix)).toEndWith(";2440;");
    // Any NarHash encoding gives the same (nix32) fingerprint.
    for (const encoding of ["hex", "base64", "sri"] as const) {
      const respelled = { ...cachix, narHash: formatHash(parseHash(cachix.narHash), encoding) };
      expect(respelled.narHash).not.toBe(cachix.narHash);
      expect(narInfoFingerprint(respelled)).toBe(narInfoFingerprint(cachix));
    }
  });

  test("the second Sig of 6lwdz... is from an unknown key and is ignored", () => {
    const ni = fixture("6lwdzpbig6zz8678blcqr5f5q1caxjw2");
    expect(verifiedSignerNames(ni, PUBLISHED)).toEqual(["cache.nixos.org-1"]);
    const otherName = ni.sigs[1]!.slice(0, ni.sigs[1]!.indexOf(":"));
    const unrelated = { ...toPublicKey(generateSecretKey(otherName)) };
    expect(verifyNarInfo(ni, [unrelated])).toBe(false);
    expect(verifiedSignerNames(ni, [unrelated, PUBLISHED[0]!])).toEqual(["cache.nixos.org-1"]);
  });

  test("a flipped bit anywhere in the signature fails", () => {
    const ni = fixture("n5glp21rsz314qssw9fbvfswgy3kc68f");
    for (const bit of [0, 7, 100, 255, 256, 511]) {
      expect(verifyNarInfo({ ...ni, sigs: [flipBitInSig(ni.sigs[0]!, bit)] }, PUBLISHED)).toBe(false);
    }
  });

  test("a wrong key with the same name fails; the right key under another name fails", () => {
    const ni = fixture("n5glp21rsz314qssw9fbvfswgy3kc68f");
    const impostor = toPublicKey(generateSecretKey("cache.nixos.org-1"));
    expect(verifyNarInfo(ni, [impostor])).toBe(false);
    expect(verifyNarInfo(ni, [impostor, PUBLISHED[0]!])).toBe(true);
    expect(verifyNarInfo(ni, [{ name: "cache.nixos.org-2", raw: PUBLISHED[0]!.raw }])).toBe(false);
  });

  test.each<[string, (ni: NarInfo) => NarInfo]>([
    ["a changed reference", (ni) => ({ ...ni, references: [ni.references![0]!, "qdcbgcj27x2kpxj2sf9yfvva7qsgg64g-glibc-2.38-78"] })],
    ["a dropped reference", (ni) => ({ ...ni, references: ni.references!.slice(0, 1) })],
    ["a changed NarSize", (ni) => ({ ...ni, narSize: ni.narSize + 1 })],
    ["a changed NarHash", (ni) => ({ ...ni, narHash: "sha256:17kc6swib31psygpmwi8952lvywlpqn474059yxl7grwsvr6k0fj" })],
    ["a changed StorePath name", (ni) => ({ ...ni, storePath: `${ni.storePath}x` })],
  ])("%s fails", (_why, change) => {
    expect(verifyNarInfo(change(fixture("n5glp21rsz314qssw9fbvfswgy3kc68f")), PUBLISHED)).toBe(false);
  });

  test("fields outside the fingerprint do not matter", () => {
    const ni = fixture("n5glp21rsz314qssw9fbvfswgy3kc68f");
    expect(verifyNarInfo({ ...ni, url: "nar/other.nar", compression: "none", references: [...ni.references!].reverse() }, PUBLISHED)).toBe(true);
  });

  test("unreadable signatures are ignored, not thrown", () => {
    const ni = fixture("n5glp21rsz314qssw9fbvfswgy3kc68f");
    const junk = ["", ":", "cache.nixos.org-1", "cache.nixos.org-1:", "cache.nixos.org-1:!!!!", "cache.nixos.org-1:AAAA"];
    expect(verifyNarInfo({ ...ni, sigs: junk }, PUBLISHED)).toBe(false);
    expect(verifyNarInfo({ ...ni, sigs: [...junk, ...ni.sigs] }, PUBLISHED)).toBe(true);
  });

  test("sign and verify with our own key; re-signing replaces only our signature", () => {
    const key = generateSecretKey("ncps-test-1");
    const pub = toPublicKey(key);
    const upstream = fixture("6lwdzpbig6zz8678blcqr5f5q1caxjw2");
    const signed = signNarInfo(upstream, key);
    expect(upstream.sigs.length).toBe(2); // the input is not modified
    expect(signed.sigs.length).toBe(3);
    expect(signed.sigs.slice(0, 2)).toEqual(upstream.sigs);
    expect(signed.sigs[2]).toStartWith("ncps-test-1:");
    expect(verifiedSignerNames(signed, [pub, ...PUBLISHED]).sort()).toEqual(["cache.nixos.org-1", "ncps-test-1"]);

    const resigned = signNarInfo({ ...signed, sigs: [signed.sigs[2]!, ...upstream.sigs] }, key);
    expect(resigned.sigs).toEqual([...upstream.sigs, signed.sigs[2]!]); // ed25519 is deterministic
    expect(verifyNarInfo({ ...signed, narSize: 1 }, [pub])).toBe(false);
  });

  test("RFC 8032 key: public half, determinism, cross-verification", () => {
    const key = parseSecretKey(`  ${rfcSecretText}\n`);
    expect(key.name).toBe("rfc-1");
    expect(Buffer.from(toPublicKey(key).raw).toString("hex")).toBe(RFC_PUBLIC);
    expect(formatSecretKey(key)).toBe(rfcSecretText);
    const ni = fixture("c12lxpykv6sld7a0sakcnr3y0la70x8w");
    const a = signNarInfo(ni, key);
    const b = signNarInfo(ni, parseSecretKey(rfcSecretText));
    expect(a.sigs).toEqual(b.sigs);
    expect(verifyNarInfo(a, [toPublicKey(key)])).toBe(true);
  });

  test("key text round-trips", () => {
    const key = generateSecretKey("round-trip");
    expect(parseSecretKey(formatSecretKey(key))).toEqual(key);
    const pub = toPublicKey(key);
    expect(parsePublicKey(formatPublicKey(pub))).toEqual(pub);
    expect(formatPublicKey(PUBLISHED[0]!)).toBe("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=");
  });

  test.each([
    ["no name", `:${Buffer.alloc(64).toString("base64")}`],
    ["no colon", Buffer.alloc(64).toString("base64")],
    ["a public key", "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="],
    ["bad base64", "k:!!!!"],
    ["a public half that does not belong to the seed", `k:${Buffer.from(RFC_SEED + RFC_SEED, "hex").toString("base64")}`],
    ["a name with a space", `a b:${Buffer.from(RFC_SEED + RFC_PUBLIC, "hex").toString("base64")}`],
  ])("parseSecretKey rejects %s", (_why, text) => {
    expect(() => parseSecretKey(text)).toThrow(NixFormatError);
  });

  test.each([
    ["a secret key", rfcSecretText],
    ["31 bytes", `k:${Buffer.alloc(31).toString("base64")}`],
    ["empty", ""],
  ])("parsePublicKey rejects %s", (_why, text) => {
    expect(() => parsePublicKey(text)).toThrow(NixFormatError);
  });

  test("generateSecretKey refuses names Nix could not read back", () => {
    expect(() => generateSecretKey("a:b")).toThrow(NixFormatError);
    expect(() => generateSecretKey("")).toThrow(NixFormatError);
  });
});

