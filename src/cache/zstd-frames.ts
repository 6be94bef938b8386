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
 * committed at once. */
import { open, rm } from "node:fs/promises";
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

/** Fills blocks of `size` bytes from a stream (the last one shorter). */
async function* blocks(input: ReadableStream<Uint8Array>, size: number): AsyncGenerator<Uint8Array> {
  let block = new Uint8Array(size);
  let filled = 0;
  for await (const chunk of input) {
    let taken = 0;
    while (taken < chunk.length) {
      const n = Math.min(size - filled, chunk.length - taken);
      block.set(chunk.subarray(taken, taken + n), filled);
      filled += n;
      taken += n;
      if (filled === size) {
        yield block;
        block = new Uint8Array(size);
        filled = 0;
      }
    }
  }
  if (filled > 0) yield block.subarray(0, filled);
}

/** Compress `input` into a new file at `path`, level `level`; its size, or null (and no file)
 * once the output reaches `giveUpAt` bytes (bytes that do not compress are kept as they are).
 * A block is read only with a turn in hand, so no commit holds a block while it waits: a
 * slow source (a staged upload on S3) holds its turn while it is read. */
export async function compressToZstdFrames(input: ReadableStream<Uint8Array>, path: string, level: number, giveUpAt: number): Promise<number | null> {
  const out = await open(path, "wx");
  const source = blocks(input, FRAME_BYTES);
  let size = 0;
  try {
    for (;;) {
      let frame: Uint8Array;
      await turns.take();
      try {
        const next = await source.next();
        if (next.done) break;
        frame = await Bun.zstdCompress(next.value, { level });
      } finally {
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
    await source.return(undefined); // an input left early is cancelled
  }
}
