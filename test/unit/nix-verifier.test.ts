import { describe, expect, test } from "bun:test";
import { brotliCompressSync, constants as zlibConstants, gzipSync, zstdCompressSync } from "node:zlib";
import type { Compression } from "../../src/nix/compression.ts";
import { formatHash, sha256 } from "../../src/nix/hash.ts";
import { NarVerifier, NarVerifyError, type NarDigest, type NarExpectation } from "../../src/nix/nar-verifier.ts";
import { hasCommand, testIf } from "../helpers/prereq.ts";

/** Deterministic, partly compressible bytes standing in for a NAR (the verifier never parses it). */
function sampleNar(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = (x & 7) < 5 ? 97 + ((i >> 5) % 26) : x & 0xff;
  }
  return out;
}

function randomBytes(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

const haveXz = hasCommand("xz");

/** Plain Uint8Array copies: node:zlib returns Buffers, whose slice() is a view, and the
 * tests below rely on slice() copying. */
function compress(c: Compression, nar: Uint8Array): Uint8Array {
  return new Uint8Array(compressToBuffer(c, nar));
}

function compressToBuffer(c: Compression, nar: Uint8Array): Uint8Array {
  switch (c) {
    case "none":
      return nar;
    case "zstd":
      return zstdCompressSync(nar);
    case "gzip":
      return gzipSync(nar);
    case "br":
      return brotliCompressSync(nar, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 5 } });
    case "xz": {
      const r = Bun.spawnSync(["xz", "-c", "-3", "-T1"], { stdin: nar });
      if (r.exitCode !== 0) throw new Error(`xz failed: ${r.stderr.toString()}`);
      return new Uint8Array(r.stdout);
    }
    default:
      // The verifier only hashes what it cannot decode, so any bytes stand in.
      return Buffer.concat([Buffer.from(`${c}-file:`), nar]);
  }
}

type FullExpectation = NarDigest & { compression: Compression };

function expectationFor(c: Compression, nar: Uint8Array, file: Uint8Array): FullExpectation {
  return {
    compression: c,
    fileSize: file.length,
    fileHash: formatHash(sha256(file)),
    narSize: nar.length,
    narHash: formatHash(sha256(nar)),
  };
}

/** Feeds `file` in uneven chunks (fresh buffers, as a network body gives) and ends. */
async function verify(expect: NarExpectation, file: Uint8Array, seed = 3): Promise<NarDigest> {
  const v = new NarVerifier(expect);
  let x = seed;
  let offset = 0;
  try {
    while (offset < file.length) {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      const n = 1 + (x % 20000);
      await v.write(file.slice(offset, offset + n));
      offset += n;
    }
    return await v.end();
  } finally {
    v.abort("test done");
  }
}

async function failure(p: Promise<unknown>): Promise<NarVerifyError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  if (!(caught instanceof NarVerifyError)) throw new Error(`expected NarVerifyError, got ${String(caught)}`);
  expect(caught.reason).not.toContain("\n");
  return caught;
}

function flipped(bytes: Uint8Array, at = bytes.length >> 1): Uint8Array {
  const copy = bytes.slice();
  copy[at] = (copy[at] ?? 0) ^ 0x01;
  return copy;
}

const DECODABLE: [Compression, boolean][] = [
  ["none", true],
  ["zstd", true],
  ["gzip", true],
  ["br", true],
  ["xz", haveXz],
];

describe("NarVerifier: matching NARs", () => {
  const nar = sampleNar(400_000);
  for (const [c, available] of DECODABLE) {
    testIf(available, "the xz tool is needed")(`${c}: verifies and returns the digest`, async () => {
      const file = compress(c, nar);
      const want = expectationFor(c, nar, file);
      expect(await verify(want, file)).toEqual({
        fileSize: want.fileSize,
        fileHash: want.fileHash,
        narSize: want.narSize,
        narHash: want.narHash,
      });
      // FileSize and FileHash are optional in narinfos.
      const digest = await verify({ compression: c, narSize: want.narSize, narHash: want.narHash }, file);
      expect(digest.fileHash).toBe(want.fileHash);
    });
  }

  test("expected hashes in hex or SRI are compared by value", async () => {
    const file = compress("zstd", nar);
    const want = expectationFor("zstd", nar, file);
    const digest = await verify(
      { ...want, narHash: formatHash(sha256(nar), "sri"), fileHash: formatHash(sha256(file), "hex") },
      file,
    );
    expect(digest.narHash).toBe(want.narHash);
  });

  test("an empty file with FileSize 0 and an empty NAR hash verifies as none", async () => {
    const empty = new Uint8Array(0);
    expect((await verify(expectationFor("none", empty, empty), empty)).narSize).toBe(0);
  });
});

describe("NarVerifier: mismatches reject with NarVerifyError", () => {
  const nar = sampleNar(300_000, 2);
  for (const [c, available] of DECODABLE) {
    const t = testIf(available, "the xz tool is needed");
    const file = available ? compress(c, nar) : new Uint8Array(0);
    const want = available ? expectationFor(c, nar, file) : ({} as FullExpectation);
    const withoutFile: NarExpectation = { compression: c, narSize: want.narSize, narHash: want.narHash };

    t(`${c}: one flipped byte`, async () => {
      // The decoder may notice first, at the write carrying the bad byte (xz often does).
      expect((await failure(verify(want, flipped(file)))).reason).toMatch(/^(FileHash mismatch|\w+ stream is corrupt)/);
      // Without FileHash, the decoder or NarHash must still catch it.
      const e = await failure(verify(withoutFile, flipped(file)));
      expect(e.reason).toMatch(c === "none" ? /^NarHash mismatch/ : /^(NarHash mismatch|NarSize|\w+ stream is corrupt)/);
    });

    t(`${c}: truncated body`, async () => {
      const short = file.slice(0, file.length - 1);
      expect((await failure(verify(want, short))).reason).toBe(`FileSize mismatch: expected ${file.length}, got ${file.length - 1}`);
      const e = await failure(verify(withoutFile, short));
      expect(e.reason).toMatch(c === "none" ? /^NarSize mismatch/ : /^(\w+ stream is corrupt or truncated|NarSize mismatch)/);
    });

    t(`${c}: one extra byte`, async () => {
      const long = new Uint8Array(Buffer.concat([file, new Uint8Array([0])]));
      expect((await failure(verify(want, long))).reason).toStartWith("FileSize exceeded");
      const e = await failure(verify(withoutFile, long));
      expect(e.reason).toMatch(c === "none" ? /^NarSize exceeded/ : /^(\w+ stream|NarSize)/);
    });

    t(`${c}: wrong FileSize`, async () => {
      expect((await failure(verify({ ...want, fileSize: file.length + 1 }, file))).reason).toBe(
        `FileSize mismatch: expected ${file.length + 1}, got ${file.length}`,
      );
      expect((await failure(verify({ ...want, fileSize: file.length - 1 }, file))).reason).toStartWith("FileSize exceeded");
    });

    t(`${c}: wrong NarSize or NarHash`, async () => {
      expect((await failure(verify({ ...want, narSize: nar.length + 1 }, file))).reason).toBe(
        `NarSize mismatch: expected ${nar.length + 1}, got ${nar.length}`,
      );
      expect((await failure(verify({ ...want, narSize: nar.length - 1 }, file))).reason).toStartWith("NarSize exceeded");
      const otherHash = formatHash(sha256(flipped(nar)));
      const e = await failure(verify({ ...want, narHash: otherHash }, file));
      expect(e.reason).toBe(`NarHash mismatch: expected ${otherHash}, got ${want.narHash}`);
    });
  }

  test("a FileSize overrun rejects at the write that crosses it, not at the end", async () => {
    const v = new NarVerifier({ compression: "none", fileSize: 10, narSize: 10, narHash: formatHash(sha256(nar.slice(0, 10))) });
    await v.write(nar.slice(0, 6));
    expect((await failure(v.write(nar.slice(6, 12)))).reason).toBe("FileSize exceeded: expected 10, got more");
    await failure(v.write(nar.slice(0, 1)));
    await failure(v.end());
  });

  test("a NarSize overrun while decompressing rejects before the end", async () => {
    // 20 MB of NAR declared as 1 MB: some write must reject, long before all bytes are fed.
    const big = sampleNar(20_000_000, 5);
    const file = zstdCompressSync(big);
    const v = new NarVerifier({ compression: "zstd", narSize: 1_000_000, narHash: formatHash(sha256(big)) });
    let fed = 0;
    let caught: unknown;
    try {
      for (; fed < file.length; fed += 16384) await v.write(file.slice(fed, fed + 16384));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(NarVerifyError);
    expect((caught as NarVerifyError).reason).toBe("NarSize exceeded: expected 1000000, got more");
    expect(fed).toBeLessThan(file.length);
    await failure(v.end());
  });

  test("garbage for a zstd NAR rejects", async () => {
    const e = await failure(verify({ compression: "zstd", narSize: 100, narHash: formatHash(sha256(nar)) }, sampleNar(5000, 9)));
    expect(e.reason).toStartWith("zstd stream is corrupt or truncated");
  });
});

describe("NarVerifier: compressions ncps cannot decode", () => {
  const nar = sampleNar(50_000, 4);
  for (const c of ["bzip2", "lzip", "lz4"] as const) {
    test(`${c}: checked by FileHash alone`, async () => {
      const file = compress(c, nar);
      const want = expectationFor(c, nar, file);
      // NarSize/NarHash cannot be measured: the digest repeats the expectation.
      expect(await verify(want, file)).toEqual({
        fileSize: want.fileSize,
        fileHash: want.fileHash,
        narSize: want.narSize,
        narHash: want.narHash,
      });
      expect((await failure(verify(want, flipped(file)))).reason).toStartWith("FileHash mismatch");
      expect((await failure(verify({ ...want, fileSize: null }, flipped(file)))).reason).toStartWith("FileHash mismatch");
    });

    test(`${c}: without FileHash it refuses`, async () => {
      const file = compress(c, nar);
      const want = expectationFor(c, nar, file);
      const v = new NarVerifier({ ...want, fileHash: null });
      expect((await failure(v.write(file))).reason).toBe(`cannot verify ${c} NAR without FileHash`);
      expect((await failure(v.end())).reason).toBe(`cannot verify ${c} NAR without FileHash`);
    });
  }
});

describe("NarVerifier: bad expectations and abort", () => {
  test("a malformed NarHash or FileSize rejects (the constructor never throws)", async () => {
    for (const bad of [
      { compression: "zstd", narSize: 1, narHash: "sha256:nope" },
      { compression: "zstd", narSize: 1, narHash: formatHash({ algorithm: "sha1", digest: new Uint8Array(20) }) },
      { compression: "zstd", narSize: -1, narHash: formatHash(sha256("x")) },
      { compression: "none", narSize: 1.5, narHash: formatHash(sha256("x")) },
      { compression: "none", fileSize: Number.NaN, narSize: 1, narHash: formatHash(sha256("x")) },
      { compression: "none", fileHash: "md5:xyz", narSize: 1, narHash: formatHash(sha256("x")) },
    ] as NarExpectation[]) {
      const v = new NarVerifier(bad);
      await failure(v.write(new Uint8Array([1])));
      await failure(v.end());
    }
  });

  for (const c of ["none", "zstd"] as const) {
    test(`${c}: abort makes later writes and end reject`, async () => {
      const nar = sampleNar(100_000, 6);
      const file = compress(c, nar);
      const v = new NarVerifier(expectationFor(c, nar, file));
      await v.write(file.slice(0, 1000));
      v.abort("client went away");
      expect((await failure(v.write(file.slice(1000)))).reason).toBe("aborted: client went away");
      expect((await failure(v.end())).reason).toBe("aborted: client went away");
    });
  }

  test("abort after a successful end is a no-op", async () => {
    const nar = sampleNar(1000);
    const file = compress("zstd", nar);
    const v = new NarVerifier(expectationFor("zstd", nar, file));
    await v.write(file);
    const digest = await v.end();
    v.abort();
    expect(digest.narSize).toBe(1000);
  });
});

/** Feeds `count` fresh copies of `frame` (each a complete compressed stream, so the whole is
 * valid concatenated zstd/xz) and returns the digest and the RSS growth over the run. */
async function feedRepeated(
  compression: Compression,
  frame: Uint8Array,
  block: Uint8Array,
  count: number,
): Promise<{ digest: NarDigest; growth: number }> {
  const narHasher = new Bun.CryptoHasher("sha256");
  const fileHasher = new Bun.CryptoHasher("sha256");
  for (let i = 0; i < count; i++) {
    narHasher.update(block);
    fileHasher.update(frame);
  }
  const expectation: NarExpectation = {
    compression,
    fileSize: frame.length * count,
    fileHash: formatHash({ algorithm: "sha256", digest: new Uint8Array(fileHasher.digest()) }),
    narSize: block.length * count,
    narHash: formatHash({ algorithm: "sha256", digest: new Uint8Array(narHasher.digest()) }),
  };
  Bun.gc(true);
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const v = new NarVerifier(expectation);
  for (let i = 0; i < count; i++) {
    // A fresh buffer per chunk, as a network body gives: a verifier that queued chunks
    // instead of waiting for the decoder would hold them all.
    await v.write(frame.slice());
    if (i % 8 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    // Collect now and then: what is measured is what the verifier holds on to, not how late
    // the collector runs in a test process that has run other files before this one.
    if (i % 64 === 63) Bun.gc(true);
  }
  const digest = await v.end();
  peak = Math.max(peak, process.memoryUsage().rss);
  expect(digest.narHash).toBe(expectation.narHash);
  expect(digest.fileHash).toBe(expectation.fileHash as string);
  return { digest, growth: peak - baseline };
}

describe("NarVerifier: memory stays bounded", () => {
  const MiB = 1024 * 1024;
  const LIMIT = 200 * 1024 * 1024;

  test(
    "1 GiB of zstd NAR",
    async () => {
      const block = randomBytes(MiB); // incompressible: the file is as big as the NAR
      const { digest, growth } = await feedRepeated("zstd", compress("zstd", block), block, 1024);
      expect(digest.narSize).toBe(1024 * MiB);
      expect(growth).toBeLessThan(LIMIT);
    },
    300_000,
  );

  test(
    "1 GiB of uncompressed NAR",
    async () => {
      const block = randomBytes(MiB);
      const { digest, growth } = await feedRepeated("none", block, block, 1024);
      expect(digest.narSize).toBe(1024 * MiB);
      expect(growth).toBeLessThan(LIMIT);
    },
    300_000,
  );

  // The xz decoder keeps a WebAssembly memory per stream (its 128 KiB of buffers and the
  // dictionary, 8 MiB at xz -6) and V8 frees it only when collected, so the bound is looser;
  // queueing the input instead of waiting would exceed it.
  testIf(haveXz, "the xz tool is needed")(
    "512 MiB of xz NAR",
    async () => {
      const block = randomBytes(MiB);
      const frame = compress("xz", block);
      const { digest, growth } = await feedRepeated("xz", frame, block, 512);
      expect(digest.narSize).toBe(512 * MiB);
      expect(growth).toBeLessThan(400 * 1024 * 1024);
    },
    300_000,
  );
});
