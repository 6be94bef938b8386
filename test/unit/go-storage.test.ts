/** Where the Go ncps keeps a narinfo and a NAR (kalbasit/ncps pkg/storage, pkg/nar): the keys
 * import-go reads must be the ones the Go ncps wrote, and never anything outside its tree. */
import { describe, expect, test } from "bun:test";
import { goNarInfoKey, goNarKey } from "../../src/goimport/go-storage.ts";
import { NixFormatError } from "../../src/nix/errors.ts";

const FILE_HASH = "1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3";
const NAR_HASH = "sha256:0vg4lm4c6dm7k5x1srb09nqwp2lch2bnvmq7lbw3x6vx3j8yxfq6";
const STORE_HASH = "7kgdxmg3gg6sbnsnhyq4xh4rk3a3yr9q";

describe("goNarInfoKey", () => {
  test("sharded by the first one and two characters", () => {
    expect(goNarInfoKey(STORE_HASH)).toBe(`store/narinfo/7/7k/${STORE_HASH}.narinfo`);
  });
  test("anything but a store path hash is refused", () => {
    for (const bad of ["../../etc/passwd", "", "7kgdxmg3gg6sbnsnhyq4xh4rk3a3yr9", `${STORE_HASH}/x`]) expect(() => goNarInfoKey(bad)).toThrow(NixFormatError);
  });
});

describe("goNarKey", () => {
  test("the URL's file name, with its extension, sharded", () => {
    expect(goNarKey(`nar/${FILE_HASH}.nar.xz`, NAR_HASH)).toBe(`store/nar/1/1w/${FILE_HASH}.nar.xz`);
    expect(goNarKey(`nar/${FILE_HASH}.nar`, NAR_HASH)).toBe(`store/nar/1/1w/${FILE_HASH}.nar`);
    expect(goNarKey(`nar/${FILE_HASH}.nar.zst?hash=abc`, NAR_HASH)).toBe(`store/nar/1/1w/${FILE_HASH}.nar.zst`);
    expect(goNarKey(`https://cache.example.org/nar/${FILE_HASH}.nar.xz`, NAR_HASH)).toBe(`store/nar/1/1w/${FILE_HASH}.nar.xz`);
  });
  test("nix-serve's <store hash>-<NarHash> loses its prefix, as Go's nar.URL.Normalize does", () => {
    expect(goNarKey(`nar/${STORE_HASH}-${FILE_HASH}.nar`, NAR_HASH)).toBe(`store/nar/1/1w/${FILE_HASH}.nar`);
  });
  test("a name that is no hash (cachix's uuids, castore blobs) was stored under the NarHash", () => {
    expect(goNarKey("nar/0e6a3b0c-2f7b-4c8e-9d1a-5b6c7d8e9f00.nar.zst", NAR_HASH)).toBe("store/nar/0/0v/0vg4lm4c6dm7k5x1srb09nqwp2lch2bnvmq7lbw3x6vx3j8yxfq6.nar.zst");
    expect(goNarKey("nar/snix-castore/blob?narsize=5", NAR_HASH)).toBe("store/nar/0/0v/0vg4lm4c6dm7k5x1srb09nqwp2lch2bnvmq7lbw3x6vx3j8yxfq6.nar");
  });
  test("a path in the URL never reaches the key; an unknown extension is refused", () => {
    expect(goNarKey(`../../../etc/${FILE_HASH}.nar.xz`, NAR_HASH)).toBe(`store/nar/1/1w/${FILE_HASH}.nar.xz`);
    expect(() => goNarKey(`nar/${FILE_HASH}.nar.exe`, NAR_HASH)).toThrow(NixFormatError);
    expect(() => goNarKey(`nar/${FILE_HASH}.narx`, NAR_HASH)).toThrow(NixFormatError);
  });
});
