import { describe, expect, test } from "bun:test";
import { NixFormatError } from "../../src/nix/errors.ts";
import { NIX32_ALPHABET, decodeNix32, encodeNix32, isNix32 } from "../../src/nix/nix32.ts";

const hex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));

// Produced by Nix 2.8: `nix-hash --type T --to-base32 HEX` and `nix hash to-base32 --type sha256 HEX`.
const VECTORS: [string, string][] = [
  ["d41d8cd98f00b204e9800998ecf8427e", "3y8bwfr609h3lh9ch0izcqq7fl"],
  ["900150983cd24fb0d6963f7d28e17f72", "3jgzhjhz9zjvbb0kyj7jc500ch"],
  ["da39a3ee5e6b4b0d3255bfef95601890afd80709", "143xibwh31h9bvxzalr0sjvbbvpa6ffs"],
  ["aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d", "9m1skbnr5i43n3yypvda5s65vhfwdx5a"],
  ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"],
  ["2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic"],
  ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"],
  ["36ab2837cbbf5257f2631d75581723386ef0260d9452b6f76bb6d8713415c03a", "0fn02ls73n5ndgvvclll1lkg0viq4cbmhx8xcgr5flmzrcvjiarn"],
  ["0000000000000000000000000000000000000000000000000000000000000000", "0000000000000000000000000000000000000000000000000000"],
  ["ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"],
  ["0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20", "080z3qfiq6qs34c1f5hm2h9i448h1w70s30b184hh1q60l2060h1"],
  [
    "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
    "0zdl9zrg8r3i9c1g90lgg9ip5ijzv3yhz91i0zzn3r8ap9ws784gkp9dk9j3aglhgf1amqb0pj21mh7h1nxcl18akqvvf7ggqsy30yg",
  ],
];

describe("nix32", () => {
  test("alphabet is Nix's (no e, o, t, u)", () => {
    expect(NIX32_ALPHABET).toBe("0123456789abcdfghijklmnpqrsvwxyz");
  });

  test.each(VECTORS)("encodes %s like Nix", (digestHex, nix32) => {
    expect(encodeNix32(hex(digestHex))).toBe(nix32);
    expect(Buffer.from(decodeNix32(nix32)).toString("hex")).toBe(digestHex);
    expect(isNix32(nix32)).toBe(true);
  });

  test("round-trips every length from 0 to 80 bytes", () => {
    for (let n = 0; n <= 80; n++) {
      const bytes = new Uint8Array(n).map((_, i) => (i * 151 + n * 7 + 13) & 0xff);
      const text = encodeNix32(bytes);
      expect(text.length).toBe(Math.ceil((n * 8) / 5));
      expect(decodeNix32(text)).toEqual(bytes);
    }
  });

  test.each([
    ["a character outside the alphabet", "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c7e"],
    ["upper case", "0MDQA9W1P6CMLI6976V4WI0SW9R4P5PRKJ7LZFD1877WK11C9C73"],
    ["non-ASCII", "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c7\u00e9"],
    ["a length no digest encodes to", "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c7"],
    ["one character", "0"],
    ["nonzero leftover bits", "2zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"],
  ])("rejects %s", (_why, text) => {
    expect(() => decodeNix32(text)).toThrow(NixFormatError);
    expect(isNix32(text)).toBe(false);
  });
});
