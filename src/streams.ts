/** Small stream helpers shared by the layers that read and write bytes. */
import type { FileHandle } from "node:fs/promises";
import type { ByteRange } from "./storage/blob-store.ts";

/** More than `maxBytes` arrived: the one "too large" of streams and storage (readLimited,
 * putStream). The cache turns it into a Refusal where a client sent it; src/server answers 413. */
export class TooLargeError extends Error {
  override name = "TooLargeError";
  constructor(readonly maxBytes: number) {
    super(`body exceeds ${maxBytes} bytes`);
  }
}

/** The whole body, refusing more than `max` bytes (without reading them); the body is
 * cancelled when reading it fails (an abort, a broken connection) or it is too large. */
export async function readBytesLimited(body: ReadableStream<Uint8Array>, max: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > max) throw new TooLargeError(max);
      chunks.push(value);
    }
  } catch (err) {
    await reader.cancel().catch(() => {});
    throw err;
  }
  return Buffer.concat(chunks);
}

/** The whole body as UTF-8 text, refusing more than `max` bytes (without reading them). */
export async function readLimited(body: ReadableStream<Uint8Array>, max: number): Promise<string> {
  return new TextDecoder().decode(await readBytesLimited(body, max));
}

/** A stored object's body as a stream (stores answer a Blob for local files). */
export function webStream(body: Blob | ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  return body instanceof Blob ? body.stream() : body;
}

/** write(2) may write less than asked: loop until all of `bytes` is written. */
export async function writeAll(fd: FileHandle, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += (await fd.write(bytes, offset, bytes.length - offset)).bytesWritten;
}

/** The bytes of a stream from range.start to range.end (inclusive), then its end. */
export function sliceStream(range: ByteRange): TransformStream<Uint8Array, Uint8Array> {
  let offset = 0;
  return new TransformStream({
    transform(chunk, controller) {
      const from = Math.max(range.start - offset, 0);
      const to = Math.min(range.end + 1 - offset, chunk.length);
      offset += chunk.length;
      if (from < to) controller.enqueue(chunk.subarray(from, to));
      if (offset > range.end) controller.terminate();
    },
  });
}
