import { describe, expect, test } from "bun:test";
import { parseCacheInfo, serializeCacheInfo } from "../../src/nix/cache-info.ts";
import { NixFormatError } from "../../src/nix/errors.ts";

describe("nix-cache-info", () => {
  test("cache.nixos.org's file round-trips", () => {
    const text = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n";
    const info = parseCacheInfo(text);
    expect(info).toEqual({ storeDir: "/nix/store", wantMassQuery: true, priority: 40, extra: [] });
    expect(serializeCacheInfo(info)).toBe(text);
  });

  test("defaults, unknown keys and Nix's loose spacing", () => {
    const info = parseCacheInfo("WantMassQuery:0\r\n\nX-Custom :  value \n");
    expect(info).toEqual({ storeDir: "/nix/store", wantMassQuery: false, extra: [["X-Custom", "value"]] });
    expect(serializeCacheInfo(info)).toBe("StoreDir: /nix/store\nWantMassQuery: 0\nX-Custom: value\n");
    expect(parseCacheInfo("").storeDir).toBe("/nix/store");
  });

  test.each([
    ["a non-numeric Priority", "StoreDir: /nix/store\nPriority: high\n", "Priority"],
    ["a duplicate StoreDir", "StoreDir: /nix/store\nStoreDir: /gnu/store\n", "StoreDir"],
    ["a relative StoreDir", "StoreDir: nix/store\n", "StoreDir"],
    ["an HTML page", "<html><body>Not found</body></html>\n", undefined],
    ["a carriage return inside a line", "StoreDir: /nix/store\rPriority: 1\n", undefined],
  ])("rejects %s", (_why, text, field) => {
    let error: unknown;
    try {
      parseCacheInfo(text);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(NixFormatError);
    expect((error as NixFormatError).field).toBe(field);
  });

  test("refuses to write a value that would inject a line", () => {
    expect(() => serializeCacheInfo({ storeDir: "/nix/store\nPriority: 1", wantMassQuery: true, extra: [] })).toThrow(NixFormatError);
  });
});
