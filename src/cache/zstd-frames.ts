/** An uncompressed NAR compressed for storage: independent zstd frames of FRAME_BYTES of NAR
 * each, one after another (one valid zstd stream, as every zstd decoder reads it), each
 * compressed by Bun.zstdCompress on Bun's thread pool.
 *
 * Why not node:zlib's zstd stream, as before: inside ncps, with 8 NARs committed at once, it
 * compressed at about 53 MB/s per core (9.7 s of CPU for 8 x 64 MiB of /usr, measured by
 * thread from /proc with bench/miss-path.ts), and its JavaScript stream machinery (a buffer
 * allocated and copied per 16 KiB) was the main thread's largest cost in a run of misses.
 * Bun.zstdCompress on 4 MiB blocks: 160-210 MB/s per core on the same data at the same level,
 * output 0.4% larger than one stream (level 3's window is smaller than a frame anyway), a
 * handful of promises per 4 MiB on the main thread. At most COMPRESSING blocks are read and
 * held at once, for every commit together, so memory stays bounded however many NARs are
 * committed at once. A downloaded NAR is read from its temp file into the block itself: read
 * as a stream and copied into blocks, it was the main thread's largest cost in a CPU profile
 * of eight 64 MiB misses. */
import { open, rm, type FileHandle } from "node:fs/promises";
import { writeAll } from "../streams.ts";

const FRAME_BYTES = 4 * 1024 * 1024;
/** Blocks being compressed at once, process-wide (Bun's thread pool has a thread per core). */
const COMPRESSING = 2;

/** A FIFO of turns: at most `limit` holders at once. */
class Turns {
  private held = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async take(): Promise<void> {
    if (this.held < this.limit) {
      this.held++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  give(): void {
    const next = this.waiting.shift();
    if (next) next(); // the turn passes on: held stays the same
    else this.held--;
  }
}

const turns = new Turns(COMPRESSING);

/** Where a NAR is read from, a block at a time: a file (a verified download) is read
 * straight into the block, a stream (a staged upload on S3) copied into it. */
export type FrameInput = ReadableStream<Uint8Array> | { path: string };

interface BlockReader {
  /** Fills `block` from the start; fewer bytes than its length only at the end. */
  fill(block: Uint8Array): Promise<number>;
  close(): Promise<void>;
}

function fileBlocks(path: string): BlockReader {
  let file: FileHandle | null = null;
  let position = 0;
  return {
    async fill(block) {
      file ??= await open(path, "r");
      let filled = 0;
      while (filled < block.length) {
        const { bytesRead } = await file.read(block, filled, block.length - filled, position);
        if (bytesRead === 0) break;
        filled += bytesRead;
        position += bytesRead;
      }
      return filled;
    },
    close: async () => {
      await file?.close();
    },
  };
}

function streamBlocks(input: ReadableStream<Uint8Array>): BlockReader {
  const reader = input.getReader();
  let rest: Uint8Array = new Uint8Array(0);
  return {
    async fill(block) {
      let filled = 0;
      while (filled < block.length) {
        if (rest.length === 0) {
          const { done, value } = await reader.read();
          if (done) break;
          rest = value;
        }
        const n = Math.min(block.length - filled, rest.length);
        block.set(rest.subarray(0, n), filled);
        filled += n;
        rest = rest.subarray(n);
      }
      return filled;
    },
    close: () => reader.cancel().catch(() => {}), // an input left early is cancelled
  };
}

/** Block buffers, reused: a block is filled only with a turn in hand and handed back once
 * compressed, so COMPRESSING of them serve every commit. A fresh 4 MiB buffer per block cost
 * its pages' first touch each time (here 150-215 ms of CPU per 512 MiB against 12-15 ms
 * reused) and resident memory the collector returned late. */
const spareBlocks: Uint8Array[] = [];

/** Compress `input` into a new file at `path`, level `level`; its size, or null (and no file)
 * once the output reaches `giveUpAt` bytes (bytes that do not compress are kept as they are).
 * A block is read only with a turn in hand, so no commit holds a block while it waits: a
 * slow source (a staged upload on S3) holds its turn while it is read. */
export async function compressToZstdFrames(input: FrameInput, path: string, level: number, giveUpAt: number): Promise<number | null> {
  const out = await open(path, "wx");
  const source = input instanceof ReadableStream ? streamBlocks(input) : fileBlocks(input.path);
  let size = 0;
  try {
    for (;;) {
      let frame: Uint8Array;
      await turns.take();
      const block = spareBlocks.pop() ?? new Uint8Array(FRAME_BYTES);
      try {
        const filled = await source.fill(block);
        if (filled === 0) break;
        frame = await Bun.zstdCompress(block.subarray(0, filled), { level });
      } finally {
        spareBlocks.push(block);
        turns.give();
      }
      size += frame.length;
      if (size >= giveUpAt) {
        await out.close();
        await rm(path, { force: true });
        return null;
      }
      await writeAll(out, frame);
    }
    await out.close();
    return size;
  } catch (err) {
    await out.close().catch(() => {});
    await rm(path, { force: true });
    throw err;
  } finally {
    await source.close();
  }
}
