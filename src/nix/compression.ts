/** NAR file compressions: the narinfo `Compression` names, the file extensions in NAR URLs,
 * and streaming decompression for the ones ncps can check (NarSize/NarHash need the NAR). */
import { NixFormatError } from "./errors.ts";
import { xzDecompressStream } from "./xz-wasm.ts";

export type Compression = "none" | "xz" | "zstd" | "bzip2" | "br" | "lzip" | "lz4" | "gzip";

/** Extensions as Nix's binary cache store writes them (binary-cache-store.cc), except gzip:
 * Nix writes no extension for it, which would make an ncps key for a gzip NAR look like an
 * uncompressed one, so ncps uses ".gz". */
const EXTENSION: Record<Compression, string> = {
  none: "",
  xz: ".xz",
  zstd: ".zst",
  bzip2: ".bz2",
  br: ".br",
  lzip: ".lzip",
  lz4: ".lz4",
  gzip: ".gz",
};

const BY_EXTENSION = new Map<string, Compression>(
  Object.entries(EXTENSION)
    .filter(([, ext]) => ext !== "")
    .map(([name, ext]) => [ext, name as Compression]),
);

function isCompression(s: string): s is Compression {
  return Object.hasOwn(EXTENSION, s);
}

/** The narinfo `Compression` field. Missing or empty means bzip2, as in Nix's NarInfo parser
 * (narinfos from before the field existed were bzip2). Names are exact, as Nix compares them. */
export function parseCompression(field: string | undefined): Compression {
  if (field === undefined || field === "") return "bzip2";
  if (isCompression(field)) return field;
  throw new NixFormatError(`unknown compression ${JSON.stringify(field.slice(0, 32))}`, "Compression");
}

export function compressionExtension(c: Compression): string {
  return EXTENSION[c];
}

/** ".xz" -> "xz"; null for anything else, including "" and ".nar". */
export function compressionFromExtension(ext: string): Compression | null {
  return BY_EXTENSION.get(ext) ?? null;
}

const DECOMPRESSIBLE: ReadonlySet<Compression> = new Set(["none", "xz", "zstd", "br", "gzip"]);

export function canDecompress(c: Compression): boolean {
  return DECOMPRESSIBLE.has(c);
}

/** Why a NAR in this compression is not to be used, or null when it is: ncps checks NarHash,
 * the signed hash, only for what it can decompress; the others (bzip2, lzip, lz4) rest on
 * FileHash, which no signature covers, so they are used only when the operator accepts that
 * (`--cache-accept-unverified-compression`). None of them has a streaming pure-JS decoder
 * (npm's seek-bzip decodes whole buffers), and Nix caches today use xz or zstd. */
export function unverifiableCompression(c: Compression, acceptUnverified: boolean): string | null {
  if (canDecompress(c) || acceptUnverified) return null;
  return `${c} NARs cannot be verified (ncps cannot decompress them to check NarHash) and --cache-accept-unverified-compression is off`;
}

/** bun-types declares DecompressionStream over a narrower Uint8Array type than the streams
 * Bun hands out; at run time it is a plain byte transform. */
function nativeDecompressor(format: Bun.CompressionFormat): TransformStream<Uint8Array, Uint8Array> {
  return new DecompressionStream(format) as unknown as TransformStream<Uint8Array, Uint8Array>;
}

/**
 * Decompresses a NAR file stream. Corrupt, truncated or trailing-garbage input makes the
 * returned stream error; it never ends cleanly short. Backpressure is honoured end to end
 * (pipeThrough / the native xz transform read input only as output is consumed).
 *
 * zstd, gzip and br use Bun's native DecompressionStream. Measured here (Bun 1.4.4, 2 cores,
 * 300 MB of /usr tar at zstd -3): DecompressionStream("zstd") 485-537 MB/s of output,
 * node:zlib createZstdDecompress 253-333 MB/s (via Node streams or Readable.toWeb), so the
 * web stream is used. Both error on truncation, bit flips and trailing junk.
 *
 * xz is xz-embedded in WebAssembly (xz-wasm.ts), the same on x64 and arm64, embedded in the
 * compiled binary: nothing is unpacked to TMPDIR or executed from it. Measured here (Bun 1.4.4,
 * 2 shared cores, load 3-5; a 124.7 MB NAR of /usr/lib/gcc at xz -6, 32.5 MB): xz -dc 46 MB/s
 * of output; the @napi-rs/lzma 1.5.3 native addon (lzma-rust2) it replaces 38-40 MB/s, peak
 * RSS 94-98 MB; xz-embedded WASM 29 MB/s (19 in one run under load), peak RSS 85-89 MB;
 * xz-decompress's own wrapper around the same wasm 29 MB/s; the same C rebuilt with clang 14
 * at -O2 or -O3 instead of the shipped -Os: 30-31 MB/s, no gain, so the npm-shipped bytes
 * (checkable against the package) are used. The addon's ~1.3x was not kept
 * on x64: it cost a native file written to TMPDIR and executed (lost on a noexec /tmp) and a
 * second decoder to keep equally strict. xzwasm 0.1.2 (the same decoder's older packaging)
 * 32 MB/s. @napi-rs/lzma-wasm32-wasi 1.5.3 does not load in Bun 1.4.4 (its runtime calls
 * node:wasi's WASI.initialize, which Bun lacks) and needs a worker file and runtime
 * packages on disk besides.
 */
export async function decompressStream(c: Compression, input: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>> {
  switch (c) {
    case "none":
      return input;
    case "zstd":
      return input.pipeThrough(nativeDecompressor("zstd"));
    case "gzip":
      return input.pipeThrough(nativeDecompressor("gzip"));
    case "br":
      return input.pipeThrough(nativeDecompressor("brotli"));
    case "xz":
      return xzDecompressStream(input);
    default:
      throw new NixFormatError(`unsupported compression ${c}: ncps cannot decompress it`, "Compression");
  }
}
