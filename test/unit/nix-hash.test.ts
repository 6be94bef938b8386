import { describe, expect, test } from "bun:test";
import { NixFormatError } from "../../src/nix/errors.ts";
import { canonicalHash, formatHash, hashDigestLength, parseHash, sha256, type HashAlgorithm } from "../../src/nix/hash.ts";

// One digest per algorithm in every encoding Nix prints (from `nix hash to-base32/to-sri`).
const SAMPLES: { algorithm: HashAlgorithm; hex: string; nix32: string; sri: string }[] = [
  { algorithm: "md5", hex: "900150983cd24fb0d6963f7d28e17f72", nix32: "3jgzhjhz9zjvbb0kyj7jc500ch", sri: "md5-kAFQmDzST7DWlj99KOF/cg==" },
  { algorithm: "sha1", hex: "a9993e364706816aba3e25717850c26c9cd0d89d", nix32: "kpcd173cq987hw957sx6m0868wv3x6d9", sri: "sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0=" },
  {
    algorithm: "sha256",
    hex: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    nix32: "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
    sri: "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
  },
  {
    algorithm: "sha512",
    hex: "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    nix32: "2gs8k559z4rlahfx0y688s49m2vvszylcikrfinm30ly9rak69236nkam5ydvly1ai7xac99vxfc4ii84hawjbk876blyk1jfhkbbyx",
    sri: "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw==",
  },
];

describe("hash", () => {
  test("digest lengths", () => {
    expect([hashDigestLength("md5"), hashDigestLength("sha1"), hashDigestLength("sha256"), hashDigestLength("sha512")]).toEqual([16, 20, 32, 64]);
  });

  test.each(SAMPLES)("every encoding of one $algorithm digest has one canonical form", (s) => {
    const canonical = `${s.algorithm}:${s.nix32}`;
    const base64 = s.sri.slice(s.algorithm.length + 1);
    const spellings = [
      `${s.algorithm}:${s.nix32}`,
      `${s.algorithm}:${s.hex}`,
      `${s.algorithm}:${s.hex.toUpperCase()}`,
      `${s.algorithm}:${base64}`,
      s.sri,
    ];
    for (const text of spellings) {
      expect(canonicalHash(text)).toBe(canonical);
      expect(canonicalHash(text, s.algorithm)).toBe(canonical);
    }
    // Bare digests only when the algorithm is known from elsewhere.
    for (const bare of [s.nix32, s.hex, base64]) {
      expect(canonicalHash(bare, s.algorithm)).toBe(canonical);
      expect(() => parseHash(bare)).toThrow(NixFormatError);
    }
    const hash = parseHash(canonical);
    expect(formatHash(hash)).toBe(canonical);
    expect(formatHash(hash, "hex")).toBe(`${s.algorithm}:${s.hex}`);
    expect(formatHash(hash, "base64")).toBe(`${s.algorithm}:${base64}`);
    expect(formatHash(hash, "sri")).toBe(s.sri);
  });

  test("the hex FileHash of fixture 1gxz5... is the nix32 hash in its NAR URL", () => {
    expect(canonicalHash("sha256:36ab2837cbbf5257f2631d75581723386ef0260d9452b6f76bb6d8713415c03a")).toBe(
      "sha256:0fn02ls73n5ndgvvclll1lkg0viq4cbmhx8xcgr5flmzrcvjiarn",
    );
  });

  test("sha256 of bytes and strings", () => {
    expect(formatHash(sha256("abc"))).toBe(`sha256:${SAMPLES[2]!.nix32}`);
    expect(formatHash(sha256(new TextEncoder().encode("abc")))).toBe(`sha256:${SAMPLES[2]!.nix32}`);
    expect(formatHash(sha256(""), "sri")).toBe("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
  });

  test.each([
    ["unknown algorithm", "sha384:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"],
    ["wrong length", "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5"],
    ["sha1 length under sha256", "sha256:a9993e364706816aba3e25717850c26c9cd0d89d"],
    ["bad hex", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ag"],
    ["bad nix32", "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5e"],
    ["bad base64", "sha256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0"],
    ["non-canonical base64 padding bits", "md5:kAFQmDzST7DWlj99KOF/ch=="],
    ["SRI of the wrong size", "sha256-kAFQmDzST7DWlj99KOF/cg=="],
    // Found by the fuzz test: 44 unpadded base64 chars are 33 bytes, not a sha256 digest.
    ["unpadded base64 of the base64 length", "sha256:1yf3p87fsqig07crd9sj9wh7i9jpsa03x86a22fqbls7"],
    ["empty", ""],
    ["prefix only", "sha256:"],
  ])("rejects %s", (_why, text) => {
    expect(() => parseHash(text)).toThrow(NixFormatError);
  });

  test("a prefix that disagrees with the expected algorithm is refused", () => {
    expect(() => parseHash(`sha1:${SAMPLES[1]!.nix32}`, "sha256")).toThrow(NixFormatError);
    expect(() => parseHash(SAMPLES[0]!.sri, "sha256")).toThrow(NixFormatError);
  });
});
