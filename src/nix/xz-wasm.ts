/** Streaming xz decompression in WebAssembly (xz-embedded, see xz-embedded-wasm.ts): the same
 * decoder on x64 and arm64, embedded in the compiled binary, with nothing written to disk or
 * executed from it at run time.
 *
 * Each stream gets its own WebAssembly instance (its own linear memory: 128 KiB of buffers plus
 * the stream's dictionary, 8 MiB at xz -6, at most 64 MiB), dropped when the stream ends,
 * fails or is cancelled, so concurrent NARs never wait on each other and a finished one's
 * memory is not kept. xz-decompress's own wrapper is not used: it serialises every stream in
 * the process behind one lock (one stalled download would hold up every other xz NAR), and
 * takes an empty chunk from the source for the end of input.
 *
 * Strictness, as liblzma's: concatenated streams and stream padding are accepted; truncation,
 * a bad CRC64/CRC32, a corrupt index, or anything after the last stream that is not stream
 * padding make the stream error. The decoder refuses what it was not built for (a SHA-256
 * check, BCJ or delta filters, a dictionary over 64 MiB): Nix writes none of these. */
import { XZ_EMBEDDED_WASM_BASE64 } from "./xz-embedded-wasm.ts";

interface XzExports {
  memory: WebAssembly.Memory;
  create_context(): number;
  destroy_context(ctx: number): void;
  supply_input(ctx: number, size: number): void;
  get_next_output(ctx: number): number;
}

// enum xz_ret (xz-embedded linux/include/linux/xz.h)
const XZ_OK = 0;
const XZ_STREAM_END = 1;
const XZ_RET_NAMES = [
  "XZ_OK",
  "XZ_STREAM_END",
  "unsupported integrity check",
  "out of memory",
  "dictionary larger than 64 MiB",
  "not xz data",
  "unsupported xz options (filter or check)",
  "corrupt xz data",
  "no progress possible",
];

let compiled: WebAssembly.Module | null = null;
function wasmModule(): WebAssembly.Module {
  compiled ??= new WebAssembly.Module(Buffer.from(XZ_EMBEDDED_WASM_BASE64, "base64"));
  return compiled;
}

/** One decoder: a context in its own instance. The context struct (xz-decompress.h) is, in
 * 32-bit words from its start: bufsize, in, in_pos, in_size, out, out_pos, out_size, dec. */
class XzDecoder {
  private readonly exports: XzExports;
  private readonly ctx: number;
  readonly bufSize: number;
  private readonly inAt: number;
  private readonly outAt: number;

  constructor() {
    this.exports = new WebAssembly.Instance(wasmModule(), {}).exports as unknown as XzExports;
    this.ctx = this.exports.create_context();
    const w = this.words();
    if (this.ctx === 0 || w[7] === 0) throw new Error("xz decoder: out of memory creating a context");
    this.bufSize = w[0]!;
    this.inAt = w[1]!;
    this.outAt = w[4]!;
  }

  /** Views are made afresh per call: a memory that grows detaches the old ones. */
  private words(): Uint32Array {
    return new Uint32Array(this.exports.memory.buffer, this.ctx, 8);
  }

  /** True when the decoder has consumed all input supplied so far. */
  needsInput(): boolean {
    const w = this.words();
    return w[2] === w[3];
  }

  /** At most bufSize bytes; an empty chunk means the input has ended. */
  supply(chunk: Uint8Array): void {
    new Uint8Array(this.exports.memory.buffer, this.inAt, chunk.length).set(chunk);
    this.exports.supply_input(this.ctx, chunk.length);
  }

  /** Runs the decoder once; returns its status and a copy of the output it made. */
  run(): { status: number; inputUsed: boolean; output: Uint8Array } {
    const before = this.words()[2];
    const status = this.exports.get_next_output(this.ctx);
    const w = this.words();
    const output = new Uint8Array(this.exports.memory.buffer, this.outAt, w[5]!).slice();
    w[5] = 0;
    return { status, inputUsed: w[2] !== before, output };
  }
}

function xzError(status: number): Error {
  return new Error(`xz: ${XZ_RET_NAMES[status] ?? `decoder status ${status}`}`);
}

/** Decompresses an xz file (one or more concatenated streams). The returned stream errors on
 * any malformed, truncated or trailing input and never ends short; input is read only as
 * output is consumed. */
export function xzDecompressStream(input: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  const reader = input.getReader();
  let decoder: XzDecoder | null = null;
  let pending: Uint8Array = new Uint8Array(0);
  let ended = false;

  return new ReadableStream<Uint8Array>(
    {
      start() {
        decoder = new XzDecoder();
      },
      async pull(controller) {
        const dec = decoder!;
        try {
          for (;;) {
            if (!ended && dec.needsInput()) {
              while (pending.length === 0 && !ended) {
                const { done, value } = await reader.read();
                if (done) ended = true;
                else pending = value;
              }
              const n = Math.min(dec.bufSize, pending.length);
              dec.supply(pending.subarray(0, n)); // n = 0 once the input has ended: finish
              pending = pending.subarray(n);
            }
            const { status, inputUsed, output } = dec.run();
            if (status === XZ_STREAM_END) {
              // Only reported once the input has ended (catrun with finish): nothing follows.
              if (output.length > 0) controller.enqueue(output);
              decoder = null;
              controller.close();
              return;
            }
            if (status !== XZ_OK) throw xzError(status);
            if (output.length > 0) {
              controller.enqueue(output);
              return;
            }
            // After the end of input, a run that neither consumes nor produces is a truncation.
            if (ended && !inputUsed) throw new Error("xz: truncated input");
          }
        } catch (err) {
          decoder = null;
          void reader.cancel(err).catch(() => {});
          throw err;
        }
      },
      cancel(reason) {
        decoder = null;
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
