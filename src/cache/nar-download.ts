/** One upstream NAR download into a temp file that every client reads while it grows.
 *
 * The download runs at the upstream's speed whatever the clients do; each client pulls from
 * the file at its own pace (memory stays bounded), and a client leaving does not stop it.
 * Bytes are checked while they arrive, on the verification thread (verification.ts), which reads
 * the temp file behind the download: the download never waits for hashing or decompressing,
 * and neither do hits on the main thread. The final byte of a known-length body, of any range, and
 * the end of an unknown-length one reach clients only once FileHash/NarHash check out, so a failed
 * download can never look complete: clients still reading get an error, i.e. an aborted
 * connection. */
import { mkdir, open, rm, type FileHandle } from "node:fs/promises";
import { declaredFileSize, NarVerifyError, type NarDigest, type NarExpectation } from "../nix/nar-verifier.ts";
import { writeAll } from "../streams.ts";
import { verificationThread, type ChunkJob, type Verification, type VerifiedNar, type Verifier } from "./verification.ts";
import type { Logger } from "../telemetry/logger.ts";

// Per read from the growing file. 64 KiB: 8 clients on a 200 MB miss peaked at 85-88 MB RSS,
// against 110-150 MB with 256 KiB reads (150-220 MB with the verification thread), although
// one client alone is served faster with larger reads (200 MiB: 756 ms at 64 KiB, 441 ms at
// 256 KiB). Bounded memory wins.
const READ_CHUNK = 64 * 1024;

export interface DownloadSource {
  url: string;
  fetch: (url: string, signal: AbortSignal) => Promise<Response>;
  expect: NarExpectation;
  /** chunk the NAR while verifying it (content-defined chunking); the directory is made and
   * removed here, and what it holds is the committer's until then */
  chunks?: ChunkJob;
}

export class NarDownloadError extends Error {
  override name = "NarDownloadError";
}

/** When a download is given up. A body trickling just fast enough to reset the stall timer
 * would otherwise hold the download, and a graceful stop (which drains downloads), forever. */
export interface DownloadLimits {
  /** no byte at all for this long, ms */
  stallTimeoutMs: number;
  /** fewer than this many bytes per second on average over `rateWindowMs` (0: no minimum) */
  minBytesPerSecond: number;
  rateWindowMs: number;
}

export const defaultDownloadLimits: DownloadLimits = { stallTimeoutMs: 120_000, minBytesPerSecond: 1024, rateWindowMs: 60_000 };

/** At most this much received and not yet written before the download waits for the disk. */
const MAX_UNWRITTEN = 8 * 1024 * 1024;

/** Writes a download's chunks in order, batched: while one write is in flight the next chunks
 * gather and go out in one writev, so a fast upstream costs a write per batch rather than per
 * chunk, and a slow one still gets each chunk written at once. */
class BatchWriter {
  private queue: Uint8Array[] = [];
  private queued = 0;
  private total = 0;
  private writing: Promise<void> | null = null;
  private error: unknown = null;

  constructor(
    private readonly fd: FileHandle,
    private readonly onWritten: (total: number, batch: Uint8Array[]) => void,
  ) {}

  /** Resolves at once unless too much is waiting for the disk. */
  push(chunk: Uint8Array): Promise<void> {
    if (this.error) throw this.error;
    this.queue.push(chunk);
    this.queued += chunk.length;
    this.writing ??= this.drain();
    return this.queued > MAX_UNWRITTEN ? this.flush() : Promise.resolve();
  }

  /** Every pushed byte written; rejects with the first write error. */
  async flush(): Promise<void> {
    await this.writing;
    if (this.error) throw this.error;
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        const bytes = this.queued;
        this.queue = [];
        this.queued = 0;
        const { bytesWritten } = await this.fd.writev(batch);
        if (bytesWritten < bytes) await writeAll(this.fd, Buffer.concat(batch).subarray(bytesWritten));
        this.total += bytes;
        this.onWritten(this.total, batch);
      }
    } catch (err) {
      this.error = err;
    } finally {
      this.writing = null;
    }
  }
}

/** How much of a download's most recent bytes stays in memory for its readers. */
const RECENT_BYTES = 4 * 1024 * 1024;

/** The most recently written chunks of a download, by file position. A reader that keeps up
 * with the download (the usual case: clients stream at the upstream's speed) is handed these
 * chunks themselves, shared by every such reader, instead of reading each back from the file
 * into a buffer of its own: no read, no copy, no allocation per reader. Chunks are never
 * changed once received, so sharing them is safe.
 *
 * A chunk every reader has passed is dropped at once (`dropBefore`), not when RECENT_BYTES
 * push it out: buffers held that long outlive the young generation's collections and come
 * back to the allocator only at a full one, so every new chunk lands on fresh pages. Held to
 * the cap, eight 64 MiB misses cost the main thread 1.4-2 s of CPU where a bare relay spends
 * 0.45-0.7 s, and a bare relay made to hold its last 64 chunks just as much (bench/miss-floor.ts
 * and perf: the extra was memmove and page faults). */
class RecentChunks {
  private chunks: { start: number; bytes: Uint8Array }[] = [];
  private held = 0;

  /** Chunks written from file position `start` on, in order. */
  add(start: number, batch: Uint8Array[]) {
    for (const bytes of batch) {
      this.chunks.push({ start, bytes });
      start += bytes.length;
      this.held += bytes.length;
    }
    while (this.held > RECENT_BYTES && this.chunks.length > 1) this.held -= this.chunks.shift()!.bytes.length;
  }

  /** Drops the chunks that end at or before `pos`. */
  dropBefore(pos: number) {
    while (this.chunks.length > 0 && this.chunks[0]!.start + this.chunks[0]!.bytes.length <= pos) this.held -= this.chunks.shift()!.bytes.length;
  }

  /** The bytes from `pos` to the end of the chunk holding it (not past `end`), or null when
   * they are no longer (or not yet) held. */
  at(pos: number, end: number): Uint8Array | null {
    for (const { start, bytes } of this.chunks) {
      if (pos < start) return null;
      if (pos < start + bytes.length) return bytes.subarray(pos - start, Math.min(bytes.length, end - start));
    }
    return null;
  }
}

type State = "running" | "verified" | "failed";

export class NarDownload {
  /** Settles when the download is verified and committed (or failed). Never rejects unhandled. */
  readonly done: Promise<void>;
  /** Declared length of the body, when the narinfo gives it (FileSize, or NarSize uncompressed). */
  readonly size: number | null;
  /** True once the upstream answered 200 with a body; false when it answered anything else or
   * not at all: a client is answered only once this is known (no 200 followed by a reset). */
  readonly started: Promise<boolean>;
  private readonly startedResolvers = Promise.withResolvers<boolean>();
  written = 0;
  private released = 0;
  private state: State = "running";
  private error: Error | null = null;
  private readFd: FileHandle | null = null;
  /** The last chunks written, as received: readers keeping up are served these very buffers. */
  private readonly recent = new RecentChunks();
  /** Where each open reader is: the recent chunks all of them have passed are dropped. */
  private readonly readers = new Set<{ pos: number }>();
  private holders = 1; // the download itself, plus one per reader
  private wakeups: (() => void)[] = [];
  private readonly abort = new AbortController();

  constructor(
    readonly key: string,
    private readonly tempPath: string,
    private readonly source: DownloadSource,
    private readonly commit: (tempPath: string, digest: VerifiedNar) => Promise<void>,
    private readonly logger: Logger,
    private readonly limits: DownloadLimits = defaultDownloadLimits,
    private readonly verifier: Verifier = verificationThread,
  ) {
    this.size = declaredFileSize(source.expect);
    this.started = this.startedResolvers.promise;
    this.done = this.run().catch(() => {}).finally(() => this.startedResolvers.resolve(false));
  }

  get failed(): boolean {
    return this.state === "failed";
  }

  /** Why the download failed (null while it has not), for logs and metrics. */
  get failure(): Error | null {
    return this.state === "failed" ? this.error : null;
  }

  /** The download failed because the bytes were not what the narinfo promised (not because
   * the transfer broke): the narinfo, or its upstream, is not to be trusted for this NAR. */
  get failedVerification(): boolean {
    return this.error instanceof NarVerifyError;
  }

  /** Drops the recent chunks every reader has passed: all of them while no one reads (a
   * reader that comes later starts from the file). */
  private dropPassedChunks() {
    let slowest = this.written;
    for (const r of this.readers) slowest = Math.min(slowest, r.pos);
    this.recent.dropBefore(slowest);
  }

  private notify() {
    const w = this.wakeups;
    this.wakeups = [];
    for (const wake of w) wake();
  }

  private progress(): Promise<void> {
    return new Promise((resolve) => this.wakeups.push(resolve));
  }

  private release() {
    this.holders--;
    if (this.holders === 0 && this.readFd) {
      const fd = this.readFd;
      this.readFd = null;
      void fd.close().catch(() => {});
    }
  }

  private async run(): Promise<void> {
    let writeFd: FileHandle | null = null;
    let verification: Verification | null = null;
    let stall: ReturnType<typeof setTimeout> | undefined;
    const { stallTimeoutMs, minBytesPerSecond, rateWindowMs } = this.limits;
    const armStall = () => {
      clearTimeout(stall);
      stall = setTimeout(() => this.abort.abort(new NarDownloadError(`no data for ${stallTimeoutMs} ms`)), stallTimeoutMs);
    };
    // Each window must bring its share of bytes: a steady trickle fails the first full window.
    let writtenAtWindowStart = 0;
    const rateCheck =
      minBytesPerSecond > 0
        ? setInterval(() => {
            const got = this.written - writtenAtWindowStart;
            writtenAtWindowStart = this.written;
            if (got < (minBytesPerSecond * rateWindowMs) / 1000) {
              this.abort.abort(new NarDownloadError(`slower than ${minBytesPerSecond} bytes/s over ${rateWindowMs} ms (${got} bytes)`));
            }
          }, rateWindowMs)
        : undefined;
    try {
      writeFd = await open(this.tempPath, "wx");
      this.readFd = await open(this.tempPath, "r");
      this.notify();
      if (this.source.chunks) await mkdir(this.source.chunks.dir, { recursive: true });
      verification = this.verifier.start(this.tempPath, this.source.expect, this.source.chunks);
      // Bytes found wrong while more still arrive end the download at once.
      verification.result.catch((err: unknown) => err instanceof NarVerifyError && this.abort.abort(err));
      const res = await this.source.fetch(this.source.url, this.abort.signal);
      if (res.status !== 200 || !res.body) {
        await res.body?.cancel();
        throw new NarDownloadError(`upstream answered HTTP ${res.status} for ${this.source.url}`);
      }
      this.startedResolvers.resolve(true);
      const body = res.body.getReader();
      const toVerify = verification;
      const writer = new BatchWriter(writeFd, (written, batch) => {
        this.recent.add(this.written, batch);
        this.written = written;
        this.released = this.size === null ? written : Math.min(written, this.size - 1);
        this.dropPassedChunks();
        toVerify.written(written);
        this.notify();
      });
      let received = 0;
      armStall();
      for (;;) {
        const { done, value } = await body.read();
        if (done) break;
        armStall();
        received += value.length;
        // The verifier would say so too, later: a body past its declared size must not fill the disk first.
        if (this.size !== null && received > this.size) throw new NarVerifyError(`FileSize exceeded: expected ${this.size}, got more`);
        await writer.push(value);
      }
      await writer.flush();
      clearTimeout(stall);
      clearInterval(rateCheck);
      verification.end(this.written);
      const digest = await verification.result;
      await writeFd.close(); // the store syncs what it keeps
      writeFd = null;
      this.state = "verified";
      this.released = this.written;
      this.notify();
      await this.commit(this.tempPath, digest);
    } catch (err) {
      clearTimeout(stall);
      verification?.abort();
      if (this.state === "verified") {
        // Clients got correct bytes; only storing them failed.
        this.logger.error("storing verified NAR failed", { key: this.key, error: err });
      } else {
        const reason = this.abort.signal.aborted && this.abort.signal.reason instanceof Error ? this.abort.signal.reason : (err as Error);
        this.error = reason instanceof Error ? reason : new NarDownloadError(String(reason));
        this.state = "failed";
        this.startedResolvers.resolve(false);
        this.notify();
        this.logger.warn("NAR download failed", { key: this.key, url: this.source.url, error: this.error });
      }
      throw err;
    } finally {
      clearTimeout(stall);
      clearInterval(rateCheck);
      if (writeFd) await writeFd.close().catch(() => {});
      // Readers keep their open descriptor; after a local rename this finds nothing to remove.
      await rm(this.tempPath, { force: true }).catch(() => {});
      if (this.source.chunks) await rm(this.source.chunks.dir, { recursive: true, force: true }).catch(() => {});
      this.release();
    }
  }

  /** What a client stream fails with. Bun.serve prints a response stream's error to stderr
   * with a source excerpt for an Error, one line for a string; the cause is already in the
   * structured log, so clients' streams fail with a one-line string. */
  private abortReason(): string {
    return `ncps: NAR ${this.key} not served: ${this.error?.message ?? "download no longer running"}`;
  }

  /** Bytes [start, end] (inclusive; end defaults to the last) as they become verified-safe. */
  reader(start = 0, end?: number): ReadableStream<Uint8Array> {
    if (this.state === "failed" || (this.state === "verified" && !this.readFd)) {
      return new ReadableStream({ start: (c) => c.error(this.abortReason()) });
    }
    this.holders++;
    const reader = { pos: start };
    this.readers.add(reader);
    const limit = end === undefined ? Infinity : end + 1;
    let open = true;
    const finish = () => {
      if (open) {
        open = false;
        this.readers.delete(reader);
        this.dropPassedChunks();
        this.release();
      }
    };
    return new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          for (;;) {
            if (this.state === "failed") {
              finish();
              controller.error(this.abortReason());
              return;
            }
            const fd = this.readFd;
            // A range's own last byte also waits for verification: no ranged read may end
            // cleanly on bytes that could still turn out wrong.
            const available = this.state === "verified" ? Math.min(this.written, limit) : Math.min(this.released, limit - 1);
            const kept = reader.pos < available ? this.recent.at(reader.pos, available) : null;
            if (kept) {
              reader.pos += kept.length;
              this.dropPassedChunks();
              controller.enqueue(kept);
              if (reader.pos >= limit) {
                finish();
                controller.close();
              }
              return;
            }
            if (fd && reader.pos < available) {
              const buf = new Uint8Array(Math.min(READ_CHUNK, available - reader.pos));
              const { bytesRead } = await fd.read(buf, 0, buf.length, reader.pos);
              reader.pos += bytesRead;
              controller.enqueue(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
              if (reader.pos >= limit) {
                finish();
                controller.close();
              }
              return;
            }
            if (this.state === "verified" && reader.pos >= Math.min(this.written, limit)) {
              finish();
              controller.close();
              return;
            }
            await this.progress();
          }
        },
        cancel: finish,
      },
      { highWaterMark: 0 },
    );
  }
}
