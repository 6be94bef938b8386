/** A stored NAR is two things that must agree: its bytes in the BlobStore and its record in
 * the database. This module is the only code that writes, opens or removes that pair, so the
 * rules live in one place: a NAR is recorded only once its bytes are stored and verified, a
 * record whose bytes are gone is forgotten, and removing a NAR also removes every narinfo
 * that names it (which would otherwise point at nothing) and their in-memory copies.
 * Uploads, downloads, DELETE, eviction and fsck all go through here.
 *
 * An uncompressed NAR (a ".nar" key) is stored zstd-compressed when that makes it smaller
 * (random bytes do not compress), and its record describes the
 * stored bytes (size, FileHash) beside the NarHash: that the two hashes differ is how a record
 * says so (`storedAsZstd`); NARs recorded before this, stored as they are, have equal ones.
 *
 * A chunked NAR (content-defined chunking) has no bytes under its key: its record (size 0,
 * `chunked`) lists its chunks, which chunk-store.ts keeps, each once for every NAR holding it.
 * It is served decompressed chunk by chunk, or as its chunks' zstd frames one after another. */
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MetadataStore, NarInfoRecord, NarRecord } from "../db/metadata-store.ts";
import { decompressStream } from "../nix/compression.ts";
import { NarVerifyError, type NarDigest, type NarExpectation } from "../nix/nar-verifier.ts";
import type { BlobBody, BlobStore, ByteRange } from "../storage/blob-store.ts";
import type { Logger } from "../telemetry/logger.ts";
import { Refusal } from "./errors.ts";
import type { HotNarInfos } from "./hot-narinfos.ts";
import { verificationThread } from "./verification.ts";
import { tempFileName } from "./temp-files.ts";
import { compressToZstdFrames, type FrameInput } from "./zstd-frames.ts";
import { verifyStoredNar, verifyStream } from "./verify-stored.ts";
import { sliceStream, webStream } from "../streams.ts";
import { ChunkMissingError, ChunkStore } from "./chunk-store.ts";
import type { VerifiedNar } from "./verification.ts";

/** zstd level for uncompressed NARs. Measured on 64 MiB of /usr with Bun.zstdCompress in
 * 4 MiB frames (zstd-frames.ts): level 1 370 MB/s to 44% of the size, level 3 160-210 MB/s
 * to 37%. It runs once per NAR, after its clients have their bytes, so the smaller result wins. */
const ZSTD_LEVEL = 3;
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** The key of an uncompressed NAR: stored zstd-compressed. */
export function uncompressedKey(key: string): boolean {
  return key.endsWith(".nar");
}

/** The record's stored bytes are the zstd compression of an uncompressed NAR. */
export function storedAsZstd(record: Pick<NarRecord, "key" | "fileHash" | "narHash">): boolean {
  return uncompressedKey(record.key) && record.fileHash !== null && record.fileHash !== record.narHash;
}

export interface StoredNarsOptions {
  db: MetadataStore;
  store: BlobStore;
  /** narinfos served recently: a removed narinfo must leave it */
  hot: HotNarInfos;
  logger: Logger;
  /** where an uncompressed NAR is compressed before it is stored (default: the system's) */
  tempDir?: string;
}

export interface Removed {
  /** the NAR's bytes or record were there */
  nar: boolean;
  /** narinfos that named it and were removed with it */
  narInfos: string[];
}

/** A chunked NAR ready to be read: its length, and its chunks' stored bytes in all. */
export interface ChunkedNar {
  narSize: number;
  storedSize: number;
  /** the NAR's bytes, or a range of them */
  open(range?: ByteRange): ReadableStream<Uint8Array>;
  /** the chunks' zstd frames, one after another: the NAR, zstd-compressed */
  openFrames(): ReadableStream<Uint8Array>;
}

export class StoredNars {
  private afterRecord: ((key: string) => void) | null = null;
  readonly chunks: ChunkStore;

  constructor(private readonly opts: StoredNarsOptions) {
    this.chunks = new ChunkStore(opts.db, opts.store, opts.logger);
  }

  /** Called after each NAR is recorded (eviction: a commit that passes the size cap starts a
   * pass at once). It must not throw. */
  onRecorded(fn: ((key: string) => void) | null): void {
    this.afterRecord = fn;
  }

  /** The record of a stored, verified NAR. */
  find(key: string): Promise<NarRecord | null> {
    return this.opts.db.getNar(key);
  }

  /** Move a verified temp file into storage, then record it (never the other way round: a
   * crash in between leaves bytes without a record, which fsck removes, never a record
   * without bytes). The temp file is consumed. An uncompressed NAR is compressed first. */
  async commitFile(key: string, tempPath: string, digest: NarDigest): Promise<void> {
    const compressed = uncompressedKey(key) ? await this.compress({ path: tempPath }, digest) : null;
    if (!compressed) return this.putAndRecord(key, tempPath, digest);
    await rm(tempPath, { force: true });
    await this.putAndRecord(key, compressed.path, compressed.digest);
  }

  /** Record a NAR verified and chunked (`digest.chunks`, their new files in `chunkDir`):
   * its chunks stored first, then its record with its chunk list, in one transaction. */
  async commitChunks(key: string, chunkDir: string, digest: VerifiedNar): Promise<void> {
    const chunks = digest.chunks;
    if (!chunks) throw new Error(`NAR ${key} was not chunked`);
    const record: NarRecord = { key, size: 0, fileHash: null, narHash: digest.narHash, createdAt: Date.now(), chunked: true };
    const hashes = chunks.map((c) => c.hash);
    await this.chunks.commit(chunks, chunkDir, () => this.opts.db.putChunkedNar(record, hashes, Date.now()));
    this.afterRecord?.(key);
  }

  /** A chunked NAR's chunks, ready to be read; null when the record lists none (removed
   * meanwhile). */
  async openChunked(key: string): Promise<ChunkedNar | null> {
    const chunks = await this.opts.db.narChunks(key);
    if (chunks.length === 0) return null;
    const narSize = chunks.reduce((n, c) => n + c.narBytes, 0);
    return {
      narSize,
      storedSize: chunks.reduce((n, c) => n + c.size, 0),
      open: (range) => this.chunks.bytes(chunks, range?.start ?? 0, range?.end ?? narSize - 1),
      openFrames: () => this.chunks.frames(chunks),
    };
  }

  /** A chunked NAR's chunks, put together, hash to its NarHash (fsck --verify-content);
   * false too when a chunk is missing or broken. */
  async chunkedMatches(rec: NarRecord): Promise<boolean> {
    const chunked = await this.openChunked(rec.key);
    if (!chunked) return false;
    try {
      await verifyStream(chunked.open(), { compression: "none", narSize: chunked.narSize, narHash: rec.narHash });
      return true;
    } catch (err) {
      if (err instanceof NarVerifyError || err instanceof ChunkMissingError) return false;
      throw err;
    }
  }

  private async putAndRecord(key: string, tempPath: string, digest: NarDigest): Promise<void> {
    await this.opts.store.putFile(key, tempPath);
    await this.recordDigest(key, digest);
  }

  private async recordDigest(key: string, digest: NarDigest): Promise<void> {
    await this.opts.db.putNar({ key, size: digest.fileSize, fileHash: digest.fileHash, narHash: digest.narHash, createdAt: Date.now() });
    this.afterRecord?.(key);
  }

  /** An uncompressed NAR (verified as `nar`) compressed into a temp file, and verified again
   * there: what is recorded is checked bytes, not trust in the compressor. Null when that is
   * no smaller (random bytes): the NAR is then stored as it is. */
  private async compress(input: FrameInput, nar: NarDigest): Promise<{ path: string; digest: NarDigest } | null> {
    const path = join(this.opts.tempDir ?? tmpdir(), tempFileName("download", "zstd"));
    const size = await compressToZstdFrames(input, path, ZSTD_LEVEL, nar.narSize);
    if (size === null) return null;
    try {
      // On the verification thread: decompressing and hashing a whole NAR here held up every
      // request on the main thread for as long (narinfo-hit p99 110 ms during 8 misses).
      const check = verificationThread.start(path, { compression: "zstd", narSize: nar.narSize, narHash: nar.narHash });
      check.end(size);
      return { path, digest: await check.result };
    } catch (err) {
      await rm(path, { force: true });
      throw err;
    }
  }

  /** Whether the stored bytes start as a zstd frame (uploads are staged as they arrive). */
  private async storedZstd(key: string): Promise<boolean> {
    const head = await this.opts.store.get(key, { start: 0, end: ZSTD_MAGIC.length - 1 });
    if (!head || head.size < ZSTD_MAGIC.length) return false;
    const bytes = new Uint8Array(await new Response(head.body).arrayBuffer());
    return ZSTD_MAGIC.every((b, i) => bytes[i] === b);
  }

  /** Store an uploaded NAR's bytes without recording them: it is recorded once a narinfo
   * naming it arrives and the bytes verify against it (`verifyStaged`, then `record`). */
  stageFile(key: string, tempPath: string): Promise<void> {
    return this.opts.store.putFile(key, tempPath);
  }

  /** Size of stored bytes, recorded or only staged; null when there are none. */
  async storedSize(key: string): Promise<number | null> {
    return (await this.opts.store.stat(key))?.size ?? null;
  }

  /** Read the stored bytes through the NAR verifier. An uncompressed NAR stored compressed is
   * checked by its NarHash and NarSize (the expected FileHash and FileSize describe the NAR
   * as uploaded, not the stored bytes). */
  async verifyStaged(key: string, expect: NarExpectation): Promise<NarDigest> {
    if (uncompressedKey(key) && (await this.storedZstd(key))) {
      return verifyStoredNar(this.opts.store, key, { compression: "zstd", narSize: expect.narSize, narHash: expect.narHash });
    }
    return verifyStoredNar(this.opts.store, key, expect);
  }

  /** Record stored bytes that were verified (`verifyStaged`). An uncompressed NAR staged as
   * it arrived is compressed and stored again first. */
  async record(key: string, digest: NarDigest): Promise<void> {
    if (!uncompressedKey(key) || storedAsZstd({ key, ...digest })) return this.recordDigest(key, digest);
    const staged = await this.opts.store.get(key);
    if (!staged) throw new Refusal("not-found", `${key} is not in storage`);
    const compressed = await this.compress(webStream(staged.body), digest);
    if (!compressed) return this.recordDigest(key, digest);
    await this.putAndRecord(key, compressed.path, compressed.digest);
  }

  /** The NAR's bytes, or a range of them. A recorded NAR whose bytes are gone (removed
   * meanwhile, or lost from storage) is forgotten, so the next request fetches it again. */
  async open(key: string, range?: ByteRange): Promise<BlobBody> {
    const body = await this.opts.store.get(key, range);
    if (body) return body;
    this.opts.logger.warn("NAR recorded but missing from storage; forgetting it", { key });
    await this.opts.db.deleteNar(key);
    throw new Refusal("not-found", `${key} is not in storage`);
  }

  /** An uncompressed NAR stored compressed, decompressed: whole, or a range (the bytes before
   * it are decompressed and dropped). */
  async openDecompressed(key: string, range?: ByteRange): Promise<ReadableStream<Uint8Array>> {
    const nar = await decompressStream("zstd", webStream((await this.open(key)).body));
    return range ? nar.pipeThrough(sliceStream(range)) : nar;
  }

  /** The one removal rule: the NAR's record and bytes, and every narinfo naming it. */
  remove(key: string): Promise<Removed> {
    return this.forget(key, () => false);
  }

  /** Remove one narinfo, and its NAR when no other narinfo names it. False when there was none. */
  async removeNarInfo(hash: string): Promise<boolean> {
    const record = await this.opts.db.getNarInfo(hash);
    if (!record) return false;
    await this.forgetNarInfo(hash);
    await this.removeIfUnnamed(record.narKey);
    return true;
  }

  /** Eviction's removal, for a batch in a few statements: the narinfos, and the records of
   * their NARs (`narKey`, as listed) that no narinfo names any more, which are returned. Their
   * bytes stay, for the caller to delete once readers that already opened them are done
   * (`discardUnrecorded`, which keeps them if the NAR was recorded again meanwhile); no new
   * reader finds them, since readers start from the record. */
  async removeNarInfosKeepingBytes(narInfos: { hash: string; narKey: string }[]): Promise<{ narInfos: number; nars: NarRecord[] }> {
    const { db, hot } = this.opts;
    const removed = await db.deleteNarInfos(narInfos.map((n) => n.hash));
    for (const n of narInfos) hot.forget(n.hash);
    const keys = [...new Set(narInfos.map((n) => n.narKey))];
    const named = await db.namedNarKeys(keys);
    return { narInfos: removed, nars: await db.deleteNars(keys.filter((k) => !named.has(k))) };
  }

  /** Remove a NAR (bytes and record) that no recorded narinfo names: an upload whose narinfo
   * was refused or lost its race. */
  async removeIfUnnamed(key: string): Promise<void> {
    if ((await this.opts.db.narInfosForNar(key)).length > 0) return;
    await this.opts.db.deleteNar(key);
    await this.opts.store.delete(key);
  }

  /** Remove staged bytes that were never recorded and that no narinfo names. */
  async discardUnrecorded(key: string): Promise<void> {
    if ((await this.opts.db.getNar(key)) !== null) return;
    await this.removeIfUnnamed(key);
  }

  /** Forget a NAR whose stored bytes cannot be served (missing, corrupt, or never recorded):
   * its record and bytes go, so the next request fetches it again. Narinfos naming it stay
   * when `refetchable` says their NAR can be fetched again (their upstream is configured);
   * the others go, as they would name nothing. */
  async forget(key: string, refetchable: (n: NarInfoRecord) => boolean): Promise<Removed> {
    const gone = (await this.opts.db.narInfosForNar(key)).filter((n) => !refetchable(n));
    for (const n of gone) await this.forgetNarInfo(n.hash);
    const recorded = await this.opts.db.deleteNar(key);
    const stored = await this.opts.store.delete(key);
    return { nar: recorded || stored, narInfos: gone.map((n) => n.hash) };
  }

  /** A narinfo record and its in-memory copy; the NAR it names is left as it is. */
  async forgetNarInfo(hash: string): Promise<void> {
    await this.opts.db.deleteNarInfo(hash);
    this.opts.hot.forget(hash);
  }
}
