import { describe, expect, test } from "bun:test";
import { seededRandom } from "../helpers/seeded-random.ts";
import type { Compression } from "../../src/nix/compression.ts";
import { NixFormatError } from "../../src/nix/errors.ts";
import { formatHash, parseHash } from "../../src/nix/hash.ts";
import { ncpsNarKey, parseNarUrl, parseNcpsNarRequest, type NarUrl } from "../../src/nix/nar-url.ts";

// A real FileHash from cache.nixos.org (ruby-2.7.3) and its other encodings.
const NIX32 = "1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3";
const HEX = Buffer.from(parseHash(`sha256:${NIX32}`).digest).toString("hex");
const SRI = formatHash(parseHash(`sha256:${NIX32}`), "sri");
const BASE64 = formatHash(parseHash(`sha256:${NIX32}`), "base64");
const STORE_HASH = "1q8w6gl1ll0mwfkqc3c2yx005s6wwfrl";

function expectFormatError(f: () => unknown): void {
  let caught: unknown;
  let result: unknown;
  try {
    result = f();
  } catch (err) {
    caught = err;
  }
  if (!(caught instanceof NixFormatError)) {
    throw new Error(`expected NixFormatError, got ${caught === undefined ? `result ${JSON.stringify(result)}` : String(caught)}`);
  }
}

describe("parseNarUrl: shapes upstreams publish", () => {
  const cases: [string, NarUrl][] = [
    // Nix's own binary cache store (cache.nixos.org, file://, s3://): FileHash nix32 + extension.
    ...(
      [
        ["", null],
        [".xz", "xz"],
        [".zst", "zstd"],
        [".bz2", "bzip2"],
        [".br", "br"],
        [".lzip", "lzip"],
        [".lz4", "lz4"],
        [".gz", "gzip"],
      ] as [string, Compression | null][]
    ).map(([ext, compression]): [string, NarUrl] => [
      `nar/${NIX32}.nar${ext}`,
      { path: `nar/${NIX32}.nar${ext}`, query: "", hash: NIX32, compression },
    ]),
    // 64-hex digests (some tools write base16).
    [`nar/${HEX}.nar.zst`, { path: `nar/${HEX}.nar.zst`, query: "", hash: HEX, compression: "zstd" }],
    // nix-serve: <store hash>-<NarHash>.nar
    [
      `nar/${STORE_HASH}-${NIX32}.nar`,
      { path: `nar/${STORE_HASH}-${NIX32}.nar`, query: "", hash: NIX32, compression: null },
    ],
    // harmonia: nar/<NarHash>.nar?hash=<store hash>
    [
      `nar/${NIX32}.nar?hash=${STORE_HASH}`,
      { path: `nar/${NIX32}.nar`, query: `?hash=${STORE_HASH}`, hash: NIX32, compression: null },
    ],
    [
      `nar/${NIX32}.nar.zst?hash=${STORE_HASH}`,
      { path: `nar/${NIX32}.nar.zst`, query: `?hash=${STORE_HASH}`, hash: NIX32, compression: "zstd" },
    ],
    // attic: bare .nar named by the store path hash (Compression: zstd in the narinfo).
    [`nar/${STORE_HASH}.nar`, { path: `nar/${STORE_HASH}.nar`, query: "", hash: null, compression: null }],
    // cachix: a uuid.
    [
      "nar/5b2b7a1e-6f0c-4b59-9d7e-3a1f0e8c2d44.nar.zst",
      { path: "nar/5b2b7a1e-6f0c-4b59-9d7e-3a1f0e8c2d44.nar.zst", query: "", hash: null, compression: "zstd" },
    ],
    // snix: content-addressed blob with the size in the query.
    [
      "nar/snix-castore/CiQKIgog0vcu5QyMU_CpXZ0kQX6Yx3vJ5GkE0bJtV2a0T9Ywq2oQ?narsize=1234",
      {
        path: "nar/snix-castore/CiQKIgog0vcu5QyMU_CpXZ0kQX6Yx3vJ5GkE0bJtV2a0T9Ywq2oQ",
        query: "?narsize=1234",
        hash: null,
        compression: null,
      },
    ],
    // Absolute URLs are kept as given.
    [
      `https://cache.example.org/nar/${NIX32}.nar.xz?token=a%20b`,
      { path: `https://cache.example.org/nar/${NIX32}.nar.xz`, query: "?token=a%20b", hash: NIX32, compression: "xz" },
    ],
    [
      `http://10.0.0.1:8080/prefix/nar/${NIX32}.nar`,
      { path: `http://10.0.0.1:8080/prefix/nar/${NIX32}.nar`, query: "", hash: NIX32, compression: null },
    ],
    // An unknown extension is no hint at all.
    [`nar/${NIX32}.nar.lzma`, { path: `nar/${NIX32}.nar.lzma`, query: "", hash: null, compression: null }],
  ];
  for (const [url, want] of cases) {
    test(url, () => {
      expect(parseNarUrl(url)).toEqual(want);
    });
  }

  test("a 52-char name with a wrong-alphabet letter carries no hash", () => {
    const bad = `e${NIX32.slice(1)}`;
    expect(parseNarUrl(`nar/${bad}.nar.xz`).hash).toBeNull();
    expect(parseNarUrl(`nar/${HEX.toUpperCase()}.nar.xz`).hash).toBeNull();
  });
});

describe("parseNarUrl: rejects", () => {
  const bad = [
    "",
    "nar/../x.nar",
    "../nar/x.nar",
    "nar/./x.nar",
    "nar/%2e%2e/x.nar",
    "nar/%2E%2E/x.nar",
    "nar/x%2f..%2fy.nar",
    "nar/x%5cy.nar",
    "nar/%zz.nar",
    "nar//x.nar",
    "/nar/x.nar",
    "/etc/passwd",
    "nar\\x.nar",
    "C:\\nar\\x.nar",
    "nar/x.nar\n",
    "nar/x\u0000.nar",
    "nar/x .nar",
    "nar/x.nar#frag",
    "file:///etc/passwd",
    "ftp://host/nar/x.nar",
    "https://host/nar/../x.nar",
    "https://host/nar/%2e%2e/x.nar",
    "https:///x.nar",
    "nar/x.nar?a=%zz",
    "x".repeat(5000),
  ];
  for (const url of bad) {
    test(JSON.stringify(url.slice(0, 60)), () => expectFormatError(() => parseNarUrl(url)));
  }
});

describe("ncpsNarKey", () => {
  test("every encoding of one hash gives one key", () => {
    const forms = [`sha256:${NIX32}`, `sha256:${HEX}`, BASE64, SRI, NIX32, HEX];
    for (const f of forms) expect(ncpsNarKey(f, "xz")).toBe(`nar/${NIX32}.nar.xz`);
  });

  test("the extension follows the compression", () => {
    expect(ncpsNarKey(NIX32, "none")).toBe(`nar/${NIX32}.nar`);
    expect(ncpsNarKey(NIX32, "zstd")).toBe(`nar/${NIX32}.nar.zst`);
    expect(ncpsNarKey(NIX32, "bzip2")).toBe(`nar/${NIX32}.nar.bz2`);
    expect(ncpsNarKey(NIX32, "gzip")).toBe(`nar/${NIX32}.nar.gz`);
  });

  test("non-sha256 or malformed hashes are rejected", () => {
    expectFormatError(() => ncpsNarKey("sha512:" + "0".repeat(128), "xz"));
    expectFormatError(() => ncpsNarKey("md5:" + "0".repeat(32), "xz"));
    expectFormatError(() => ncpsNarKey(NIX32.slice(1), "xz"));
    expectFormatError(() => ncpsNarKey("", "xz"));
    expectFormatError(() => ncpsNarKey("../../etc/passwd", "xz"));
  });

  test("a key ncps publishes passes its own request gate unchanged", () => {
    for (const c of ["none", "xz", "zstd", "bzip2", "br", "lzip", "lz4", "gzip"] as const) {
      const key = ncpsNarKey(SRI, c);
      expect(parseNcpsNarRequest(key)).toEqual({ key, hashPart: NIX32, compression: c });
    }
  });
});

describe("parseNcpsNarRequest", () => {
  test("hex requests are normalised to the nix32 key", () => {
    expect(parseNcpsNarRequest(`nar/${HEX}.nar.zst`)).toEqual({
      key: `nar/${NIX32}.nar.zst`,
      hashPart: NIX32,
      compression: "zstd",
    });
  });

  test("a bare .nar is uncompressed", () => {
    expect(parseNcpsNarRequest(`nar/${NIX32}.nar`).compression).toBe("none");
  });

  const bad = [
    "nar/../x",
    `nar/../${NIX32}.nar`,
    "%2e%2e",
    `nar/%2e%2e/${NIX32}.nar`,
    "nar/x/../../etc",
    `nar/${NIX32}.nar/../../etc/passwd`,
    `${NIX32}.nar`,
    `/nar/${NIX32}.nar`,
    `nar//${NIX32}.nar`,
    `NAR/${NIX32}.nar`,
    `nar/${NIX32.slice(1)}.nar`, // 51 chars
    `nar/${NIX32}0.nar`, // 53 chars
    `nar/${HEX.slice(1)}.nar`, // 63 hex
    `nar/${HEX.toUpperCase()}.nar`,
    `nar/e${NIX32.slice(1)}.nar`, // 'e' is not in the nix32 alphabet
    `nar/u${NIX32.slice(1)}.nar`,
    `nar/z${NIX32.slice(1)}.nar`, // right alphabet, but more than 256 bits
    `nar/${STORE_HASH}.nar`,
    `nar/${STORE_HASH}-${NIX32}.nar`,
    `nar/${NIX32}.nar.lzma`,
    `nar/${NIX32}.nar.zstd`,
    `nar/${NIX32}.nar.XZ`,
    `nar/${NIX32}.nar.`,
    `nar/${NIX32}.narinfo`,
    `nar/${NIX32}`,
    `nar/${NIX32}.nar?hash=${STORE_HASH}`,
    `nar/${NIX32}.nar\n`,
    `nar/${NIX32}.nar.xz\u0000`,
    "",
    "nar/",
  ];
  for (const path of bad) {
    test(`rejects ${JSON.stringify(path)}`, () => expectFormatError(() => parseNcpsNarRequest(path)));
  }
});

describe("fuzz: only NixFormatError, never a hang", () => {
  const seeds = [
    `nar/${NIX32}.nar.xz`,
    `nar/${HEX}.nar.zst`,
    `nar/${STORE_HASH}-${NIX32}.nar`,
    `nar/${NIX32}.nar?hash=${STORE_HASH}`,
    `https://cache.example.org/nar/${NIX32}.nar.xz?x=1`,
    "nar/snix-castore/abc?narsize=1",
  ];
  const pieces = ["/", "..", ".", "%2e", "%2f", "%", "?", "#", "\\", "\u0000", "\n", " ", "é", "\ud800", ".nar", ".xz", "://", "e", "Z", "-"];

  test("parseNarUrl and parseNcpsNarRequest on 20,000 mutated and random inputs", () => {
    const next = seededRandom(0x5eed);
    const pick = <T>(xs: T[]): T => xs[Math.floor(next() * xs.length)] as T;
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      let s = pick(seeds);
      const edits = 1 + Math.floor(next() * 4);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(next() * (s.length + 1));
        const kind = next();
        if (kind < 0.3) s = s.slice(0, at) + pick(pieces) + s.slice(at);
        else if (kind < 0.55) s = s.slice(0, at) + s.slice(at + 1 + Math.floor(next() * 3));
        else if (kind < 0.8) s = s.slice(0, at) + String.fromCharCode(Math.floor(next() * 0x250)) + s.slice(at + 1);
        else s = Array.from({ length: Math.floor(next() * 80) }, () => String.fromCharCode(32 + Math.floor(next() * 95))).join("");
      }
      for (const parse of [parseNarUrl, parseNcpsNarRequest] as ((s: string) => unknown)[]) {
        try {
          parse(s);
          accepted++;
        } catch (err) {
          if (!(err instanceof NixFormatError)) throw new Error(`${JSON.stringify(s)} threw ${String(err)}`);
        }
      }
      // Whatever the gate accepts must be a canonical key: nothing else reaches storage.
      try {
        const req = parseNcpsNarRequest(s);
        expect(req.key).toMatch(/^nar\/[0-9a-df-np-sv-z]{52}\.nar(\.xz|\.zst|\.bz2|\.br|\.lzip|\.lz4|\.gz)?$/);
      } catch (err) {
        if (!(err instanceof NixFormatError)) throw err;
      }
    }
    // The mutations leave some inputs valid; a parser that rejected everything would pass
    // the loop above vacuously.
    expect(accepted).toBeGreaterThan(1000);
  }, 20_000);
});
