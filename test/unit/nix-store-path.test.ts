import { describe, expect, test } from "bun:test";
import { NixFormatError } from "../../src/nix/errors.ts";
import { STORE_DIR, isNarHashPart, isStorePathHash, parseStorePath, parseStorePathBaseName } from "../../src/nix/store-path.ts";

const HASH = "1gxz5nfzfnhyxjdyzi04r86sh61y4i00";

describe("store paths", () => {
  test("hash parts", () => {
    expect(isStorePathHash(HASH)).toBe(true);
    expect(isStorePathHash(HASH.slice(1))).toBe(false);
    expect(isStorePathHash(`${HASH}0`)).toBe(false);
    expect(isStorePathHash(HASH.replace("g", "e"))).toBe(false);
    expect(isStorePathHash(HASH.toUpperCase())).toBe(false);
  });

  test("NAR hash parts: 52 nix32 or 64 lowercase hex", () => {
    expect(isNarHashPart("0fn02ls73n5ndgvvclll1lkg0viq4cbmhx8xcgr5flmzrcvjiarn")).toBe(true);
    expect(isNarHashPart("504dd9a697cdfa0ddc22552ca66b3322afd52beee44642419d0fff83bb9071e2")).toBe(true);
    expect(isNarHashPart("504DD9A697CDFA0DDC22552CA66B3322AFD52BEEE44642419D0FFF83BB9071E2")).toBe(false);
    expect(isNarHashPart("0fn02ls73n5ndgvvclll1lkg0viq4cbmhx8xcgr5flmzrcvjiar")).toBe(false);
    expect(isNarHashPart("0fn02ls73n5ndgvvclll1lkg0viq4cbmhx8xcgr5flmzrcvjiare")).toBe(false);
    // 52 chars but the top digit sets bits past 256: no sha256 encodes to it.
    expect(isNarHashPart("zfn02ls73n5ndgvvclll1lkg0viq4cbmhx8xcgr5flmzrcvjiarn")).toBe(false);
  });

  test("parses full paths and base names", () => {
    expect(parseStorePath(`${STORE_DIR}/${HASH}-hello-2.12.1`)).toEqual({
      hashPart: HASH,
      name: "hello-2.12.1",
      baseName: `${HASH}-hello-2.12.1`,
    });
    expect(parseStorePathBaseName(`${HASH}-a+b?c=d_e.f`).name).toBe("a+b?c=d_e.f");
    expect(parseStorePath(`/gnu/store/${HASH}-x`, "/gnu/store").name).toBe("x");
    expect(parseStorePathBaseName(`${HASH}-${"a".repeat(211)}`).name.length).toBe(211);
  });

  test.each([
    ["no name", `${STORE_DIR}/${HASH}`],
    ["empty name", `${STORE_DIR}/${HASH}-`],
    ["name starting with a dot", `${STORE_DIR}/${HASH}-.hidden`],
    ["a slash in the name", `${STORE_DIR}/${HASH}-a/b`],
    ["a space in the name", `${STORE_DIR}/${HASH}-a b`],
    ["a name of 212 chars", `${STORE_DIR}/${HASH}-${"a".repeat(212)}`],
    ["a bad hash char", `${STORE_DIR}/${HASH.replace("g", "e")}-x`],
    ["a short hash", `${STORE_DIR}/${HASH.slice(1)}-x`],
    ["no dash after the hash", `${STORE_DIR}/${HASH}_x`],
    ["another store dir", `/gnu/store/${HASH}-x`],
    ["a relative path", `${HASH}-x`],
    ["a store dir prefix without slash", `${STORE_DIR}${HASH}-x`],
  ])("rejects %s", (_why, path) => {
    expect(() => parseStorePath(path)).toThrow(NixFormatError);
  });
});
