import { FIXTURES_DIR } from "../helpers/fixtures.ts";
import { describe, expect, test } from "bun:test";
import { readFileSync, readdirSync } from "node:fs";
import { NixFormatError } from "../../src/nix/errors.ts";
import { parseNarInfo, serializeNarInfo } from "../../src/nix/narinfo.ts";

// Real narinfos from public caches (see /work/shared/fixtures/README.md).
const FIXTURES = process.env.NCPS_NARINFO_FIXTURES ?? FIXTURES_DIR;
const fixtureNames = readdirSync(FIXTURES).filter((f) => f.endsWith(".narinfo")).sort();
const fixture = (hash: string) => readFileSync(`${FIXTURES}/${hash}.narinfo`, "utf8");

function errorOf(fn: () => unknown): NixFormatError {
  try {
    fn();
  } catch (e) {
    if (e instanceof NixFormatError) return e;
    throw e;
  }
  throw new Error("expected a NixFormatError, nothing was thrown");
}

const ORDINARY = fixture("n5glp21rsz314qssw9fbvfswgy3kc68f");
const withLine = (text: string, key: string, replacement: string | null) =>
  text
    .split("\n")
    .flatMap((l) => (l.startsWith(`${key}: `) ? (replacement === null ? [] : [replacement]) : [l]))
    .join("\n");

describe("narinfo", () => {
  test("there are nine fixtures", () => {
    expect(fixtureNames.length).toBe(9);
  });

  test.each(fixtureNames)("%s parses and serializes back byte for byte", (name) => {
    const text = readFileSync(`${FIXTURES}/${name}`, "utf8");
    const ni = parseNarInfo(text);
    expect(ni.storePath).toStartWith(`/nix/store/${name.replace(".narinfo", "")}-`);
    expect(serializeNarInfo(ni)).toBe(text);
  });

  test("fields of an ordinary narinfo", () => {
    expect(parseNarInfo(ORDINARY)).toEqual({
      storePath: "/nix/store/n5glp21rsz314qssw9fbvfswgy3kc68f-hello-2.12.1",
      url: "nar/1lid9xrpirkzcpqsxfq02qwiq0yd70chfl860wzsqd1739ih0nri.nar.xz",
      compression: "xz",
      fileHash: "sha256:1lid9xrpirkzcpqsxfq02qwiq0yd70chfl860wzsqd1739ih0nri",
      fileSize: 50160,
      narHash: "sha256:07kc6swib31psygpmwi8952lvywlpqn474059yxl7grwsvr6k0fj",
      narSize: 226552,
      references: ["n5glp21rsz314qssw9fbvfswgy3kc68f-hello-2.12.1", "qdcbgcj27x2kpxj2sf9yfvva7qsgg64g-glibc-2.38-77"],
      deriver: "1zpqmcicrg8smi9jlqv6dmd7v20d2fsn-hello-2.12.1.drv",
      sigs: [
        "cache.nixos.org-1:MadTCU1OSFCGUw4aqCKpLCZJpqBc7AbLvO7wgdlls0eq1DwaSnF/82SZE+wJGEiwlHbnZR+14daSaec0W3XoBQ==",
      ],
      extra: [],
    });
  });

  test("special shapes: hex FileHash, unknown-deriver with two Sigs, no FileHash, no References", () => {
    expect(parseNarInfo(fixture("1gxz5nfzfnhyxjdyzi04r86sh61y4i00")).fileHash).toBe(
      "sha256:36ab2837cbbf5257f2631d75581723386ef0260d9452b6f76bb6d8713415c03a",
    );
    const twoSigs = parseNarInfo(fixture("6lwdzpbig6zz8678blcqr5f5q1caxjw2"));
    expect(twoSigs.deriver).toBe("unknown-deriver");
    expect(twoSigs.sigs.length).toBe(2);
    const nixServe = parseNarInfo(fixture("c12lxpykv6sld7a0sakcnr3y0la70x8w"));
    expect([nixServe.compression, nixServe.fileHash, nixServe.fileSize]).toEqual(["none", undefined, undefined]);
    const cachix = parseNarInfo(fixture("yj1wxm9hh8610iyzqnz75kvs6xl8j3my"));
    expect(cachix.references).toBeUndefined();
    expect(cachix.deriver).toBeUndefined();
    expect(parseNarInfo(fixture("jiwdym6f9w6v5jcbqf5wn7fmg11v5q0j")).url).toBe(
      "nar/14vg46h9nbbqgbrbszrqm48f0bgzj6c4q3wkkcjf6gp53g8b21gh.nar?hash=jiwdym6f9w6v5jcbqf5wn7fmg11v5q0j",
    );
  });

  test("an empty References line is kept as [] and written back", () => {
    const text = withLine(ORDINARY, "References", "References: ");
    const ni = parseNarInfo(text);
    expect(ni.references).toEqual([]);
    expect(serializeNarInfo(ni)).toBe(text);
    expect(serializeNarInfo(ni)).toContain("\nReferences: \n");
  });

  test("unknown keys are kept in order and written after the known ones", () => {
    const text = `X-First: 1\n${ORDINARY}System: x86_64-linux\nCA: fixed:r:sha256:1lid9xrpirkzcpqsxfq02qwiq0yd70chfl860wzsqd1739ih0nri\nX-Second: two words\n`;
    const ni = parseNarInfo(text);
    expect(ni.extra).toEqual([
      ["X-First", "1"],
      ["X-Second", "two words"],
    ]);
    expect(ni.system).toBe("x86_64-linux");
    // Nix's order puts System before Sig.
    const sigLine = ORDINARY.slice(ORDINARY.indexOf("Sig: "));
    expect(serializeNarInfo(ni)).toBe(
      `${ORDINARY.replace(sigLine, "")}System: x86_64-linux\n${sigLine}CA: ${ni.ca}\nX-First: 1\nX-Second: two words\n`,
    );
  });

  test("CRLF line ends and a missing final newline are accepted; output uses LF", () => {
    expect(serializeNarInfo(parseNarInfo(ORDINARY.replaceAll("\n", "\r\n")))).toBe(ORDINARY);
    expect(serializeNarInfo(parseNarInfo(ORDINARY.slice(0, -1)))).toBe(ORDINARY);
  });

  test.each([
    ["StorePath", withLine(ORDINARY, "StorePath", null)],
    ["URL", withLine(ORDINARY, "URL", null)],
    ["NarHash", withLine(ORDINARY, "NarHash", null)],
    ["NarSize", withLine(ORDINARY, "NarSize", null)],
  ])("missing %s is refused, naming the field", (field, text) => {
    const e = errorOf(() => parseNarInfo(text));
    expect(e.field).toBe(field);
    expect(e.message).toBe(`narinfo: missing ${field}`);
    expect(e.name).toBe("NixFormatError");
  });

  test.each([
    ["NarSize 0", "NarSize", "NarSize: 0"],
    ["NarSize not a number", "NarSize", "NarSize: 12k"],
    ["NarSize negative", "NarSize", "NarSize: -1"],
    ["NarSize too large", "NarSize", "NarSize: 99999999999999999"],
    ["FileSize not a number", "FileSize", "FileSize: "],
    ["NarHash without algorithm", "NarHash", "NarHash: 07kc6swib31psygpmwi8952lvywlpqn474059yxl7grwsvr6k0fj"],
    ["NarHash of the wrong length", "NarHash", "NarHash: sha256:07kc6swib31psygpmwi8952lvywlpqn474059yxl7grwsvr6k0f"],
    ["NarHash not sha256", "NarHash", "NarHash: sha1:kpcd173cq987hw957sx6m0868wv3x6d9"],
    ["FileHash with a bad character", "FileHash", "FileHash: sha256:1lid9xrpirkzcpqsxfq02qwiq0yd70chfl860wzsqd1739ih0nre"],
    ["StorePath outside /nix/store", "StorePath", "StorePath: /gnu/store/n5glp21rsz314qssw9fbvfswgy3kc68f-hello-2.12.1"],
    ["StorePath with a bad name", "StorePath", "StorePath: /nix/store/n5glp21rsz314qssw9fbvfswgy3kc68f-hello world"],
    ["empty URL", "URL", "URL: "],
    ["bad reference", "References", "References: n5glp21rsz314qssw9fbvfswgy3kc68f-hello-2.12.1 not-a-store-path"],
    ["reference given as a full path", "References", "References: /nix/store/n5glp21rsz314qssw9fbvfswgy3kc68f-hello-2.12.1"],
    ["bad deriver", "Deriver", "Deriver: 1zpqmcicrg8smi9jlqv6dmd7v20d2fsn"],
  ])("%s is refused, naming the field", (_why, field, replacement) => {
    const e = errorOf(() => parseNarInfo(withLine(ORDINARY, field, replacement)));
    expect(e.field).toBe(field);
    expect(e.message).toStartWith("narinfo: ");
    expect(e.message).not.toContain("\n");
  });

  test.each(["StorePath", "URL", "Compression", "FileHash", "FileSize", "NarHash", "NarSize", "References", "Deriver"])(
    "a duplicate %s is refused",
    (key) => {
      const duplicated = ORDINARY.split("\n").find((l) => l.startsWith(`${key}: `))!;
      expect(errorOf(() => parseNarInfo(`${ORDINARY}${duplicated}\n`)).field).toBe(key);
    },
  );

  test.each([
    ["no separator", "Compression xz"],
    ["colon without space", "Compression:xz"],
    ["empty key", ": xz"],
    ["blank line", ""],
    ["key with a space", "Com pression: xz"],
    ["a carriage return inside the value", "Compression: x\rz"],
  ])("a line with %s is refused", (_why, bad) => {
    expect(() => parseNarInfo(withLine(ORDINARY, "Compression", bad))).toThrow(NixFormatError);
  });

  test("serialize refuses values that would inject lines", () => {
    const ni = parseNarInfo(ORDINARY);
    expect(() => serializeNarInfo({ ...ni, url: "nar/x.nar\nSig: forged:AAAA" })).toThrow(NixFormatError);
    expect(() => serializeNarInfo({ ...ni, sigs: ["a:b\r"] })).toThrow(NixFormatError);
    expect(() => serializeNarInfo({ ...ni, extra: [["Bad Key", "v"]] })).toThrow(NixFormatError);
  });

  test("at most 64 Sig lines are accepted: thousands of junk signatures are not a narinfo", () => {
    const base = fixture(fixtureNames[0]!.replace(/\.narinfo$/, "")).replace(/^Sig: .*\n/gm, "");
    const sigs = (n: number) => Array.from({ length: n }, (_, i) => `Sig: k${i}:AAAA\n`).join("");
    expect(parseNarInfo(base + sigs(64)).sigs).toHaveLength(64);
    expect(errorOf(() => parseNarInfo(base + sigs(65))).field).toBe("Sig");
  });
});
