/** Streaming NAR verification: FileSize/FileHash over the bytes as sent, NarSize/NarHash over
 * the NAR after decompressing on the fly. Memory stays bounded whatever the NAR size: write()
 * resolves only once the decompressor has room for more. */
import { canDecompress, decompressStream, type Compression } from "./compression.ts";
import { formatHash, parseHash, type Hash } from "./hash.ts";

export interface NarExpectation {
  compression: Compression;
  fileSize?: number | null;
  fileHash?: string | null;
  narSize: number;
  narHash: string;
}

export interface NarDigest {
  fileSize: number;
  /** "sha256:<nix32>" */
  fileHash: string;
  /** Measured; for a compression ncps cannot decode (bzip2, lzip, lz4), the expected value,
   * which then rests on the FileHash check alone. */
  narSize: number;
  /** "sha256:<nix32>"; same caveat as narSize. */
  narHash: string;
}

/** The bytes do not match what the narinfo promises (or cannot be checked against it). */
export class NarVerifyError extends Error {
  readonly reason: string;

  constructor(reason: string) {
    const line = reason.replace(/[\r\n]+/g, " ");
    super(`NAR verification failed: ${line}`);
    this.name = "NarVerifyError";
    this.reason = line;
  }
}

function expectedHash(field: string, text: string): Hash {
  let hash: Hash;
  try {
    hash = parseHash(text);
  } catch (err) {
    throw new NarVerifyError(`invalid ${field}: ${(err as Error).message}`);
  }
  if (hash.algorithm !== "sha256") throw new NarVerifyError(`unsupported ${field} algorithm ${hash.algorithm}`);
  return hash;
}

function checkSize(field: string, n: number | null | undefined): void {
  if (n != null && !(Number.isSafeInteger(n) && n >= 0)) throw new NarVerifyError(`invalid ${field}: ${n}`);
}

function sameDigest(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function sha256Of(hasher: Bun.CryptoHasher): Hash {
  return { algorithm: "sha256", digest: new Uint8Array(hasher.digest()) };
}

/**
 * Feed the file bytes with write() (awaiting each), then end(). Errors are reported as
 * rejections of write()/end(), never thrown by the constructor: a NarVerifyError when the
 * bytes do not match, a plain Error for an internal fault (e.g. the xz addon cannot load).
 * The verifier keeps a reference to each chunk until the decompressor has consumed it, so
 * callers must not reuse chunk buffers.
 */
/** The length of the file a narinfo describes, when it says: FileSize, or NarSize for an
 * uncompressed NAR. */
export function declaredFileSize(e: Pick<NarExpectation, "fileSize" | "compression" | "narSize">): number | null {
  return e.fileSize ?? (e.compression === "none" ? e.narSize : null);
}

export class NarVerifier {
  private readonly expect: NarExpectation;
  private readonly fileHasher = new Bun.CryptoHasher("sha256");
  /** Separate from fileHasher only when the file is compressed. */
  private readonly narHasher: Bun.CryptoHasher;
  private readonly decompressing: boolean;
  private expectedFile: Hash | null = null;
  private expectedNar: Hash | null = null;

  private fileSize = 0;
  private narSize = 0;
  private error: Error | null = null;
  private state: "open" | "ending" | "done" = "open";

  // Decompression pipeline: chunks go into `input`, the decompressed stream is drained by
  // `pipeline` into narHasher.
  private input: ReadableStreamDefaultController<Uint8Array> | null = null;
  private output: { cancel(reason?: unknown): Promise<void> } | null = null;
  private pipeline: Promise<void> = Promise.resolve();
  private inputGone = false;
  /** Wakes a write() waiting for the decompressor to take more input (or for a failure). */
  private wakeWriter: (() => void) | null = null;

  /** `onNar` sees the NAR's own bytes (decompressed) in order as they are hashed, for a
   * caller that does more with them (chunking); it must not keep them past the call. */
  constructor(
    expect: NarExpectation,
    private readonly onNar: ((bytes: Uint8Array) => void) | null = null,
  ) {
    this.expect = { ...expect };
    const c = expect.compression;
    this.decompressing = c !== "none" && canDecompress(c);
    this.narHasher = this.decompressing ? new Bun.CryptoHasher("sha256") : this.fileHasher;
    try {
      checkSize("FileSize", expect.fileSize);
      checkSize("NarSize", expect.narSize);
      this.expectedNar = expectedHash("NarHash", expect.narHash);
      if (expect.fileHash != null) this.expectedFile = expectedHash("FileHash", expect.fileHash);
      if (!canDecompress(c) && this.expectedFile === null) {
        throw new NarVerifyError(`cannot verify ${c} NAR without FileHash`);
      }
    } catch (err) {
      this.error = err as Error;
      return;
    }
    if (this.decompressing) this.startPipeline(c);
  }

  private startPipeline(c: Compression): void {
    const input = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.input = controller;
        },
        pull: () => this.wake(),
        // The decompressor gave up on its input (it failed): the pipeline reports why.
        cancel: () => {
          this.inputGone = true;
          this.wake();
        },
      },
      // One queued chunk: the decompressor (which holds its own small buffer) pulls the next
      // one only after taking this one.
      { highWaterMark: 1 },
    );
    this.pipeline = this.drain(c, input);
  }

  /** Never rejects: every outcome is recorded through fail(). */
  private async drain(c: Compression, input: ReadableStream<Uint8Array>): Promise<void> {
    let output: ReadableStream<Uint8Array>;
    try {
      output = await decompressStream(c, input);
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err))); // an internal fault, not the NAR's
      return;
    }
    if (this.error) {
      void output.cancel().catch(() => {});
      return;
    }
    const reader = output.getReader();
    this.output = reader;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        this.narSize += value.length;
        if (this.narSize > this.expect.narSize) {
          this.fail(new NarVerifyError(`NarSize exceeded: expected ${this.expect.narSize}, got more`));
          return;
        }
        this.narHasher.update(value);
        if (this.onNar) {
          try {
            this.onNar(value);
          } catch (err) {
            this.fail(err instanceof Error ? err : new Error(String(err))); // the caller's fault, not the NAR's
            return;
          }
        }
      }
    } catch (err) {
      if (this.error) return; // our own abort/failure cancelled the stream
      const message = err instanceof Error ? err.message : String(err);
      this.fail(new NarVerifyError(`${c} stream is corrupt or truncated: ${message}`));
      return;
    }
    // The input closes only in end(); a decoder that stops before that leaves bytes unread.
    if (this.state === "open") this.fail(new NarVerifyError(`${c} stream ended before the file did (trailing data)`));
  }

  private wake(): void {
    const wake = this.wakeWriter;
    this.wakeWriter = null;
    wake?.();
  }

  /** Records the first failure and tears the pipeline down: input first, so a native
   * decoder blocked on a read is released, then the output. */
  private fail(err: Error): void {
    if (this.error) return;
    this.error = err;
    try {
      this.input?.error(err);
    } catch {
      // already closed or cancelled
    }
    void this.output?.cancel(err).catch(() => {});
    this.wake();
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.error) throw this.error;
    if (this.state !== "open") throw new Error("NarVerifier.write after end");
    if (chunk.length === 0) return;

    this.fileSize += chunk.length;
    const { fileSize, narSize } = this.expect;
    if (fileSize != null && this.fileSize > fileSize) {
      this.fail(new NarVerifyError(`FileSize exceeded: expected ${fileSize}, got more`));
      throw this.error;
    }
    this.fileHasher.update(chunk);

    if (!this.decompressing) {
      if (this.expect.compression === "none") {
        this.narSize = this.fileSize;
        if (this.narSize > narSize) {
          this.fail(new NarVerifyError(`NarSize exceeded: expected ${narSize}, got more`));
          throw this.error;
        }
        this.onNar?.(chunk);
      }
      return;
    }

    const input = this.input;
    if (!input) throw new Error("NarVerifier: decompression pipeline missing");
    if (!this.inputGone) input.enqueue(chunk);
    while (!this.error && !this.inputGone && (input.desiredSize ?? 0) <= 0) {
      await new Promise<void>((resolve) => {
        this.wakeWriter = resolve;
      });
    }
    if (this.inputGone && !this.error) await this.pipeline; // learn why the decompressor quit
    if (this.error) throw this.error;
    if (this.inputGone) {
      this.fail(new NarVerifyError(`${this.expect.compression} decompressor stopped reading its input`));
      throw this.error;
    }
  }

  async end(): Promise<NarDigest> {
    if (this.error) throw this.error;
    if (this.state !== "open") throw new Error("NarVerifier.end called twice");
    this.state = "ending";
    if (this.decompressing) {
      // A decoder that failed may have cancelled its input already: the pipeline says why.
      if (!this.inputGone) this.input?.close();
      await this.pipeline;
    }
    try {
      return this.check();
    } catch (err) {
      this.fail(err as Error);
      throw err;
    } finally {
      this.state = "done";
    }
  }

  private check(): NarDigest {
    const expect = this.expect;
    if (expect.fileSize != null && this.fileSize !== expect.fileSize) {
      throw new NarVerifyError(`FileSize mismatch: expected ${expect.fileSize}, got ${this.fileSize}`);
    }
    const fileHash = sha256Of(this.fileHasher);
    if (this.expectedFile && !sameDigest(fileHash.digest, this.expectedFile.digest)) {
      throw new NarVerifyError(`FileHash mismatch: expected ${formatHash(this.expectedFile)}, got ${formatHash(fileHash)}`);
    }
    const fileDigest = { fileSize: this.fileSize, fileHash: formatHash(fileHash) };
    if (this.error) throw this.error; // decompression failed while draining
    const expectedNar = this.expectedNar as Hash;
    if (!canDecompress(expect.compression)) {
      return { ...fileDigest, narSize: expect.narSize, narHash: formatHash(expectedNar) };
    }
    if (this.narSize !== expect.narSize) {
      throw new NarVerifyError(`NarSize mismatch: expected ${expect.narSize}, got ${this.narSize}`);
    }
    const narHash = this.decompressing ? sha256Of(this.narHasher) : fileHash;
    if (!sameDigest(narHash.digest, expectedNar.digest)) {
      throw new NarVerifyError(`NarHash mismatch: expected ${formatHash(expectedNar)}, got ${formatHash(narHash)}`);
    }
    return { ...fileDigest, narSize: this.narSize, narHash: formatHash(narHash) };
  }

  /** Stops verification and releases the decompressor; pending and later write()/end() calls
   * reject. A no-op once end() has settled. */
  abort(reason = "aborted"): void {
    if (this.state === "done") return;
    this.fail(new NarVerifyError(`aborted: ${reason}`));
  }
}
