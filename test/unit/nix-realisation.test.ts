/** Realisation documents: Nix's two formats read and written byte for byte as Nix does, the
 * signature fingerprint checked against signatures Nix made, and strict refusals of the rest. */
import { describe, expect, test } from "bun:test";
import { NixFormatError } from "../../src/nix/errors.ts";
import {
  drvOutputId,
  parseBuildTraceTarget,
  parseRealisation,
  parseRealisationFileName,
  realisationFingerprint,
  realisationPath,
  renderRealisation,
  signRealisation,
  trustedRealisationSignatures,
} from "../../src/nix/realisation.ts";
import { generateSecretKey, parsePublicKey, parseSecretKey, toPublicKey } from "../../src/nix/signature.ts";

/** Made on this machine by Nix 2.8.0: a CA derivation built with secret-key-files set, then
 * `nix copy --to file://...` (realisations/<file>). */
const NIX28_FILE = "sha256:2c22f025927599b11dcea71888d8e7aa91eb3e72bacb35beb0830bf68c05fa37!out.doi";
const NIX28_DOC = "{\"dependentRealisations\":{\"sha256:5796e0d1f739ec923e95a18ad3c10b8666fe7ebc82a5276b2562e02b3f78216e!out\":\"cwqlghagscn9jjjcc16xzg8ba2jp9qn0-ca-dep\"},\"id\":\"sha256:2c22f025927599b11dcea71888d8e7aa91eb3e72bacb35beb0830bf68c05fa37!out\",\"outPath\":\"g8mgvbx3zjqmfnlnk88xj5qj6n32i6aw-ca-top\",\"signatures\":[\"builder-1:D1d0C6H+/xsLENOVOFpm7NG80BbonuV6yoaMenSRRab9of6mTj/1BTGk+t2uawJPzhofpDfa5BWG/EkUBDiiDg==\"]}";
const NIX28_KEY = parsePublicKey("builder-1:FiW4YAAWcbsYPXKaotTHp79EAiB1iQmZkF5f7tX2thc=");

/** Nix's own test vectors for build-trace-v2 (src/libstore-tests/data/realisation/, simple*):
 * the key it signs with, and the fingerprint and signature it expects. */
const NIX_TEST_KEY = parseSecretKey("test-key:tU7tTvLcScf8pmz/eTV0BEtLmRsPpZfKaRcd0nCN+pysBZPHSeg61/u2oc7mIOewfuAY1V1BiX32homTaDJ2Jw==");
const NIX_TEST_FINGERPRINT =
  '{"key":{"drvPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar.drv","outputName":"foo"},"value":{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo"}}';
const NIX_TEST_SIG = "test-key:WsjxK4/EI74COtzMDI+VCjQU9O4FydK0+YeY1CE5hUevogd+T+CPvNXza7oog3GTMS+ZlBwsC2S3ppwusKnJDg==";
const DRV = "g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar.drv";
const TRACE_ID = parseBuildTraceTarget(DRV, "foo.doi");

const HASH = `sha256:${"ab".repeat(32)}`;
const OUT = "g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo";

function refused(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(NixFormatError);
    expect((err as Error).message).not.toContain("\n");
    return (err as Error).message;
  }
  throw new Error("not refused");
}

describe("realisations/ (Nix 2.8-2.34)", () => {
  test("a document Nix 2.8 wrote parses, renders back byte for byte, and its signature verifies", () => {
    const id = parseRealisationFileName(NIX28_FILE);
    const r = parseRealisation(NIX28_DOC, id);
    expect(renderRealisation(r)).toBe(NIX28_DOC);
    expect(realisationPath(id)).toBe(`realisations/${NIX28_FILE}`);
    expect(r.signatures).toHaveLength(1);
    expect(trustedRealisationSignatures(r, [NIX28_KEY])).toEqual(r.signatures);
    expect(trustedRealisationSignatures({ ...r, outPath: OUT }, [NIX28_KEY])).toEqual([]);
  });

  test("signing adds ncps's signature beside the others, replacing its own older one", () => {
    const r = parseRealisation(NIX28_DOC, parseRealisationFileName(NIX28_FILE));
    const key = generateSecretKey("ncps-test");
    const signed = signRealisation(signRealisation(r, key), key);
    expect(signed.signatures).toHaveLength(2);
    expect(trustedRealisationSignatures(signed, [toPublicKey(key), NIX28_KEY])).toEqual(signed.signatures);
    expect(JSON.parse(renderRealisation(signed)).signatures).toEqual(signed.signatures);
  });

  test("malformed ids and documents are refused with one line", () => {
    const files = [
      "x.doi",
      `${HASH}!out`,
      `${HASH}.doi`,
      `sha256:${"AB".repeat(32)}!out.doi`,
      `sha1:${"ab".repeat(20)}!out.doi`,
      `${HASH}!.doi`,
      `${HASH}!o/ut.doi`,
      `${HASH}!.hidden.doi`,
      `${HASH}!${"x".repeat(212)}.doi`,
    ];
    for (const file of files) refused(() => parseRealisationFileName(file));
    const id = parseRealisationFileName(`${HASH}!out.doi`);
    const good = { dependentRealisations: {}, id: drvOutputId(id), outPath: OUT, signatures: [] };
    expect(parseRealisation(JSON.stringify(good), id).outPath).toBe(OUT);
    const bad: unknown[] = [
      "not json",
      "[]",
      { ...good, id: `${HASH}!dev` },
      { ...good, outPath: "not-a-store-path" },
      { ...good, outPath: 42 },
      { ...good, extra: 1 },
      { ...good, signatures: ["no-colon"] },
      { ...good, signatures: ["k:c2hvcnQ="] },
      { ...good, signatures: "k:sig" },
      { ...good, dependentRealisations: { "not-an-id": OUT } },
      { ...good, dependentRealisations: { [`${HASH}!dev`]: "bad path" } },
    ];
    for (const doc of bad) refused(() => parseRealisation(typeof doc === "string" ? doc : JSON.stringify(doc), id));
  });
});

describe("build-trace-v2/ (Nix 2.35 on, the Go ncps)", () => {
  test("the fingerprint and signature are Nix's own test vectors", () => {
    const r = parseRealisation(JSON.stringify({ outPath: OUT, signatures: [] }), TRACE_ID);
    expect(realisationFingerprint(r)).toBe(NIX_TEST_FINGERPRINT);
    expect(signRealisation(r, NIX_TEST_KEY).signatures).toEqual([NIX_TEST_SIG]);
    expect(realisationPath(TRACE_ID)).toBe(`build-trace-v2/${DRV}/foo.doi`);
  });

  test("Nix's value, the Go ncps's keyed entry (full store paths) and string signatures all read alike", () => {
    const sig = { keyName: "test-key", sig: NIX_TEST_SIG.slice("test-key:".length) };
    const forms = [
      { outPath: OUT, signatures: [sig] },
      { outPath: OUT, signatures: [NIX_TEST_SIG] },
      { key: { drvPath: `/nix/store/${DRV}`, outputName: "foo" }, value: { outPath: `/nix/store/${OUT}`, signatures: [sig] } },
      { key: { drvPath: DRV, outputName: "foo" }, value: { outPath: OUT, signatures: [sig] } },
    ];
    for (const form of forms) {
      const r = parseRealisation(JSON.stringify(form), TRACE_ID);
      expect(renderRealisation(r)).toBe(JSON.stringify({ outPath: OUT, signatures: [sig] }));
      expect(trustedRealisationSignatures(r, [toPublicKey(NIX_TEST_KEY)])).toEqual([NIX_TEST_SIG]);
    }
    expect(drvOutputId(TRACE_ID)).toBe(`${DRV}^foo`);
    expect(parseBuildTraceTarget(DRV, "foo")).toEqual(TRACE_ID);
  });

  test("a key naming another output, bad paths and stray fields are refused with one line", () => {
    const key = { drvPath: `/nix/store/${DRV}`, outputName: "foo" };
    const bad: unknown[] = [
      { key: { ...key, outputName: "out" }, value: { outPath: OUT } },
      { key: { ...key, drvPath: "/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-baz.drv" }, value: { outPath: OUT } },
      { key, value: { outPath: "/tmp/x" } },
      { key },
      { key, value: { outPath: OUT }, extra: true },
      { outPath: OUT, signatures: [{ keyName: "k" }] },
      { outPath: OUT, dependentRealisations: {} },
      {},
    ];
    for (const doc of bad) refused(() => parseRealisation(JSON.stringify(doc), TRACE_ID));
    const targets = [
      ["bar.drv", "out"],
      ["g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar", "out"],
      [DRV, "a b"],
      [DRV, ".doi"],
    ] as const;
    for (const [drv, out] of targets) refused(() => parseBuildTraceTarget(drv, out));
  });
});
