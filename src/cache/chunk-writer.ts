/** Cuts a NAR into content-defined chunks as its bytes go by and writes each new one as its
 * own zstd frame into a directory, named by its SHA-256: the verification thread runs one
 * beside the verifier, so a NAR is chunked in the same pass that checks it. Synchronous (it
 * runs on that thread); memory is one chunk (at most `max` bytes) however large the NAR. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Chunker, type ChunkSizes } from "./chunker.ts";

/** zstd level of a chunk frame: as for whole uncompressed NARs (stored-nars.ts). */
const CHUNK_ZSTD_LEVEL = 3;

/** One chunk of a NAR, in NAR order; a chunk the NAR holds twice is listed twice, written once. */
export interface WrittenChunk {
  /** SHA-256 of the chunk's bytes, hex */
  hash: string;
  /** bytes of its zstd frame */
  size: number;
  /** bytes of NAR it holds */
  narBytes: number;
}

/** Where a chunk written by a ChunkWriter is, in its directory. */
export function chunkFile(dir: string, hash: string): string {
  return join(dir, hash);
}

/** The blob key of a chunk: spread over 256 directories (a local store lists them fast). */
export function chunkKey(hash: string): string {
  return `chunk/${hash.slice(0, 2)}/${hash}`;
}

export class ChunkWriter {
  private readonly chunker: Chunker;
  /** the bytes of the chunk still open */
  private open: Uint8Array[] = [];
  private openBytes = 0;
  private readonly chunks: WrittenChunk[] = [];
  private readonly written = new Map<string, WrittenChunk>();

  constructor(
    sizes: ChunkSizes,
    private readonly dir: string,
  ) {
    this.chunker = new Chunker(sizes);
  }

  write(bytes: Uint8Array): void {
    let at = 0;
    for (const length of this.chunker.push(bytes)) {
      const take = length - this.openBytes;
      this.open.push(bytes.subarray(at, at + take));
      at += take;
      this.emit();
    }
    if (at < bytes.length) {
      // kept past this call: a copy, the caller may reuse its buffer
      this.open.push(bytes.slice(at));
      this.openBytes += bytes.length - at;
    }
  }

  /** The NAR's chunks in order, the last one written. */
  end(): WrittenChunk[] {
    this.chunker.end();
    if (this.openBytes > 0) this.emit();
    return this.chunks;
  }

  private emit(): void {
    const bytes = this.open.length === 1 ? this.open[0]! : Buffer.concat(this.open);
    this.open = [];
    this.openBytes = 0;
    const hash = new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
    let chunk = this.written.get(hash);
    if (!chunk) {
      const frame = Bun.zstdCompressSync(bytes, { level: CHUNK_ZSTD_LEVEL });
      writeFileSync(chunkFile(this.dir, hash), frame);
      chunk = { hash, size: frame.length, narBytes: bytes.length };
      this.written.set(hash, chunk);
    }
    this.chunks.push(chunk);
  }
}
