/** The chunks of chunked NARs (content-defined chunking): each stored once, as one zstd frame
 * under `chunk/<hh>/<sha256>`, whatever number of NARs hold it. Used by StoredNars only, which
 * decides when a NAR's chunks are committed, read or freed.
 *
 * Why no reference counts: a NAR's chunk list (nar_chunks rows) *is* its references, written
 * in the same transaction as its record, so no crash can leave a count wrong. Chunks no NAR
 * holds are swept, mark and sweep, once unused for GRACE_MS; a commit reserves its chunks
 * first (their last use becomes now), so no sweep takes one it is about to rely on, and the
 * transaction that records the NAR refuses any chunk a sweep doomed meanwhile (the commit
 * then reserves and writes it again). A doomed chunk's blob is deleted before its row, so a
 * row never names a blob that is gone without saying so. */
import type { ChunkRecord, MetadataStore } from "../db/metadata-store.ts";
import { forEachLimit } from "../for-each-limit.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import type { Logger } from "../telemetry/logger.ts";
import { chunkFile, chunkKey, type WrittenChunk } from "./chunk-writer.ts";

/** How long a chunk no NAR holds stays, from its last use. A commit must record its NAR within
 * this time of reserving its chunks: far more than any commit takes, and than clocks of
 * replicas differ. */
export const GRACE_MS = 60 * 60_000;

/** Chunks read ahead of the one being sent: reads of the next ones (a file or an S3 GET each)
 * overlap the sending of this one; memory stays at most this many chunks (256 KiB each at
 * the default maximum) per response. */
const READ_AHEAD = 4;

/** Chunk blobs written at once by a commit (S3 PUTs, local renames). */
const PUT_CONCURRENCY = 8;

/** A chunk of a NAR was reserved and not recorded, or recorded and not in storage. */
export class ChunkMissingError extends Error {
  override name = "ChunkMissingError";
}

function distinct(chunks: WrittenChunk[]): WrittenChunk[] {
  return [...new Map(chunks.map((c) => [c.hash, c])).values()];
}

export class ChunkStore {
  constructor(
    private readonly db: MetadataStore,
    private readonly store: BlobStore,
    private readonly logger: Logger,
  ) {}

  /** Make every chunk of a NAR stored and reserved, then call `record` (which records the NAR
   * holding them and says false when a chunk was doomed meanwhile): the new chunks' files in
   * `dir` (written by a ChunkWriter) are moved into storage. */
  async commit(chunks: WrittenChunk[], dir: string, record: () => Promise<boolean>): Promise<void> {
    const unique = distinct(chunks);
    for (let attempt = 1; ; attempt++) {
      const states = await this.db.reserveChunks(unique, Date.now());
      const doomed = unique.filter((c) => states.get(c.hash) === "doomed");
      if (doomed.length === 0) {
        // "unstored" may be another commit's that is still writing, or died: writing the same
        // bytes again is harmless (content-addressed, and a put is atomic)
        const toStore = unique.filter((c) => states.get(c.hash) === "unstored");
        await forEachLimit(toStore, PUT_CONCURRENCY, (c) => this.put(c, dir));
        if (toStore.length > 0) await this.db.markChunksStored(toStore.map((c) => c.hash));
        if (await record()) return;
      }
      // a sweep is deleting some of them: once it has, they are reserved and written anew
      if (attempt >= 10) throw new ChunkMissingError(`chunks kept being swept while committing (${doomed.length} doomed)`);
      await Bun.sleep(100 * attempt);
    }
  }

  private async put(c: WrittenChunk, dir: string): Promise<void> {
    const path = chunkFile(dir, c.hash);
    const file = Bun.file(path);
    if (!(await file.exists())) {
      // moved into storage by an earlier attempt of this commit, and swept since
      if (await this.store.stat(chunkKey(c.hash))) return;
      throw new ChunkMissingError(`chunk ${c.hash} is neither written nor in storage`);
    }
    await this.store.putFile(chunkKey(c.hash), path);
  }

  /** The stored bytes of one chunk (its zstd frame). */
  private async frame(c: ChunkRecord): Promise<Uint8Array> {
    const blob = await this.store.get(chunkKey(c.hash));
    if (!blob) throw new ChunkMissingError(`chunk ${c.hash} is recorded but not in storage`);
    const bytes = blob.body instanceof Blob ? await blob.body.bytes() : await new Response(blob.body).bytes();
    if (bytes.length !== c.size) throw new ChunkMissingError(`chunk ${c.hash} is ${bytes.length} bytes in storage, ${c.size} recorded`);
    return bytes;
  }

  /** The NAR bytes of one chunk, as many as recorded. */
  private async narBytes(c: ChunkRecord): Promise<Uint8Array> {
    const nar = await Bun.zstdDecompress(await this.frame(c));
    if (nar.length !== c.narBytes) throw new ChunkMissingError(`chunk ${c.hash} holds ${nar.length} bytes, ${c.narBytes} recorded`);
    return nar;
  }

  /** The chunk's blob holds what its name says: its bytes hash to it, and are as many as
   * recorded (fsck --verify-content). False when the blob is missing. */
  async holds(c: ChunkRecord): Promise<boolean> {
    try {
      return new Bun.CryptoHasher("sha256").update(await this.narBytes(c)).digest("hex") === c.hash;
    } catch {
      return false;
    }
  }

  /** The chunks' frames one after another: a valid zstd stream of the NAR (RFC 8878
   * decoders read concatenated frames as one), sent as stored. */
  frames(chunks: ChunkRecord[]): ReadableStream<Uint8Array> {
    return this.readAhead(chunks.map((c) => () => this.frame(c)));
  }

  /** The NAR's bytes from `start` to `end` inclusive, decompressed chunk by chunk. */
  bytes(chunks: ChunkRecord[], start: number, end: number): ReadableStream<Uint8Array> {
    const loads: (() => Promise<Uint8Array>)[] = [];
    let at = 0;
    for (const c of chunks) {
      const from = Math.max(start - at, 0);
      const to = Math.min(end + 1 - at, c.narBytes);
      if (from < to) {
        loads.push(async () => {
          const nar = await this.narBytes(c);
          return from === 0 && to === nar.length ? nar : nar.subarray(from, to);
        });
      }
      at += c.narBytes;
    }
    return this.readAhead(loads);
  }

  /** Runs up to READ_AHEAD loads ahead of the consumer, in order. A failure errors the
   * stream (the client sees an aborted transfer, never a clean short one). */
  private readAhead(loads: (() => Promise<Uint8Array>)[]): ReadableStream<Uint8Array> {
    let next = 0;
    const inFlight: Promise<Uint8Array>[] = [];
    const fill = () => {
      while (inFlight.length < READ_AHEAD && next < loads.length) {
        const p = loads[next++]!();
        p.catch(() => {}); // observed when its turn comes
        inFlight.push(p);
      }
    };
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          fill();
          const p = inFlight.shift();
          if (!p) return controller.close();
          try {
            controller.enqueue(await p);
          } catch (err) {
            this.logger.error("chunked NAR could not be read", { error: err });
            controller.error(err);
            return;
          }
          fill();
          if (inFlight.length === 0 && next >= loads.length) controller.close();
        },
        cancel: () => {
          next = loads.length;
          inFlight.length = 0;
        },
      },
      { highWaterMark: 0 },
    );
  }

  /** Remove chunks no NAR holds, unused for GRACE_MS: doomed, blobs deleted, rows deleted.
   * Returns how many and their stored bytes. */
  async sweep(now = Date.now()): Promise<{ chunks: number; bytes: number }> {
    let chunks = 0;
    let bytes = 0;
    for (;;) {
      const doomed = await this.db.doomUnusedChunks(now - GRACE_MS, 500, now);
      if (doomed.length === 0) return { chunks, bytes };
      await forEachLimit(doomed, PUT_CONCURRENCY, async (c) => void (await this.store.delete(chunkKey(c.hash))));
      chunks += await this.db.deleteDoomedChunks(doomed.map((c) => c.hash));
      bytes += doomed.reduce((n, c) => n + c.size, 0);
    }
  }
}
