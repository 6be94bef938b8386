import { describe, expect, test } from "bun:test";
import { Chunker, chunkLengths, chunkSizesProblem, defaultChunkSizes, type ChunkSizes } from "../../src/cache/chunker.ts";
import { pseudoRandom } from "../helpers/pseudo-random.ts";

function sha(bytes: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
}

function chunkHashes(bytes: Uint8Array, sizes: ChunkSizes = defaultChunkSizes): string[] {
  const hashes: string[] = [];
  let at = 0;
  for (const n of chunkLengths(bytes, sizes)) {
    hashes.push(sha(bytes.subarray(at, at + n)));
    at += n;
  }
  return hashes;
}

const small: ChunkSizes = { min: 256, avg: 1024, max: 4096 };

describe("chunker", () => {
  test("fixed vectors: the cuts of known inputs never move (stored chunks would stop being shared)", () => {
    expect(chunkLengths(pseudoRandom(1 << 20, 1))).toEqual([
      60737, 75701, 67773, 69305, 93808, 59369, 66986, 80501, 107271, 21990, 90177, 84148, 70721, 77221, 22868,
    ]);
    expect(chunkLengths(pseudoRandom(20_000, 7), small)).toEqual([
      1050, 1199, 1050, 1384, 272, 429, 1120, 1148, 1234, 392, 1060, 1627, 1074, 1335, 1266, 1264, 1858, 1183, 55,
    ]);
    // A run of one byte value never hashes to a cut: it is cut at max.
    expect(chunkLengths(new Uint8Array(600_000))).toEqual([262144, 262144, 75712]);
    expect(chunkLengths(new Uint8Array(0))).toEqual([]);
    expect(chunkLengths(new Uint8Array(100))).toEqual([100]);
  });

  test("every chunk but the last is between min and max, and they add up to the input", () => {
    for (const sizes of [defaultChunkSizes, small, { min: 64, avg: 64, max: 64 }, { min: 1000, avg: 5000, max: 5001 }]) {
      const input = pseudoRandom(3 << 20, 42);
      const lengths = chunkLengths(input, sizes);
      expect(lengths.reduce((a, b) => a + b, 0)).toBe(input.length);
      for (const n of lengths.slice(0, -1)) {
        expect(n).toBeGreaterThanOrEqual(sizes.min);
        expect(n).toBeLessThanOrEqual(sizes.max);
      }
      expect(lengths.at(-1)!).toBeLessThanOrEqual(sizes.max);
    }
  });

  test("chunks average near avg on random bytes", () => {
    const lengths = chunkLengths(pseudoRandom(16 << 20, 3));
    const mean = (16 << 20) / lengths.length;
    expect(mean).toBeGreaterThan(defaultChunkSizes.avg * 0.7);
    expect(mean).toBeLessThan(defaultChunkSizes.avg * 1.5);
  });

  test("the cuts do not depend on how the stream is split", () => {
    const input = pseudoRandom(2 << 20, 9);
    const whole = chunkLengths(input);
    let seed = 5;
    for (const maxPiece of [1, 7, 4096, 100_000, 1 << 20]) {
      const chunker = new Chunker();
      const lengths: number[] = [];
      // one byte at a time over the first 300 KB only: the rest in random-sized pieces
      for (let at = 0; at < input.length; ) {
        seed = (seed * 1103515245 + 12345) >>> 0;
        const n = maxPiece === 1 && at > 300_000 ? 65_537 : 1 + (seed % maxPiece);
        lengths.push(...chunker.push(input.subarray(at, at + n)));
        at += n;
      }
      const last = chunker.end();
      if (last > 0) lengths.push(last);
      expect(lengths).toEqual(whole);
    }
  });

  test("bytes inserted early move only the cuts near them: the chunks after are the same", () => {
    const base = pseudoRandom(4 << 20, 11);
    for (const [at, insert] of [[0, 1], [123_456, 17], [1_000_000, 5000]] as const) {
      const edited = new Uint8Array(base.length + insert);
      edited.set(base.subarray(0, at), 0);
      edited.set(pseudoRandom(insert, 99), at);
      edited.set(base.subarray(at), at + insert);
      const before = chunkHashes(base);
      const after = new Set(chunkHashes(edited));
      const shared = before.filter((h) => after.has(h)).length;
      // At most the chunk holding the edit and the one after it differ.
      expect(before.length - shared).toBeLessThanOrEqual(2);
    }
  });

  test("a chunker is ready for a new stream after end()", () => {
    const chunker = new Chunker(small);
    chunker.push(pseudoRandom(777, 1));
    chunker.end();
    const input = pseudoRandom(20_000, 7);
    const lengths = chunker.push(input);
    lengths.push(chunker.end());
    expect(lengths).toEqual(chunkLengths(input, small));
  });

  test("sizes that cannot work are refused with one line", () => {
    expect(chunkSizesProblem(defaultChunkSizes)).toBeNull();
    expect(chunkSizesProblem({ min: 100, avg: 80, max: 200 })).toContain("min <= avg <= max");
    expect(chunkSizesProblem({ min: 0, avg: 50, max: 200 })).toContain("at least 64");
    expect(chunkSizesProblem({ min: 64, avg: 64, max: 1 << 30 })).toContain("at most 64 MiB");
    expect(() => new Chunker({ min: 1.5, avg: 100, max: 200 })).toThrow(RangeError);
  });
});
