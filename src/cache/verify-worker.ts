/** The verification thread (a Bun Worker): hashes and decompresses NARs being downloaded, so
 * the main thread only receives, writes and serves bytes. Each job reads its temp file as it
 * grows (the main thread says how far it is written), through the same NarVerifier as
 * everywhere else, in reads of READ_BYTES: memory stays bounded however far behind the
 * verification falls, and the download never waits for it. A job asked to chunk the NAR
 * (content-defined chunking) also cuts the NAR's bytes into chunks as they are hashed and
 * writes the new ones (chunk-writer.ts): the NAR is read and decompressed once for both. */
import { open, type FileHandle } from "node:fs/promises";
import { NarVerifier, NarVerifyError, type NarExpectation } from "../nix/nar-verifier.ts";
import { ChunkWriter } from "./chunk-writer.ts";
import type { ChunkJob, ToMain, ToWorker } from "./verification.ts";

declare const self: Worker;

// 1 MiB per read: large enough that the per-read cost (a promise, a syscall) vanishes next
// to hashing it, small enough that eight jobs hold 8 MiB.
const READ_BYTES = 1024 * 1024;

interface Job {
  verifier: NarVerifier;
  fd: FileHandle | null;
  read: number;
  written: number;
  ended: boolean;
  aborted: boolean;
  wake: (() => void) | null;
}

const jobs = new Map<number, Job>();
const post = (message: ToMain) => self.postMessage(message);

function wake(job: Job) {
  const w = job.wake;
  job.wake = null;
  w?.();
}

async function run(id: number, path: string, expect: NarExpectation, chunking: ChunkJob | undefined) {
  const chunks = chunking ? new ChunkWriter(chunking.sizes, chunking.dir) : null;
  const onNar = chunks ? (bytes: Uint8Array) => chunks.write(bytes) : null;
  const job: Job = { verifier: new NarVerifier(expect, onNar), fd: null, read: 0, written: 0, ended: false, aborted: false, wake: null };
  jobs.set(id, job);
  // An uncompressed NAR's bytes are hashed (and chunked) before write() returns, so one
  // buffer, grown to the largest read so far, serves every read (a small NAR's stays small);
  // a decompressor may still hold a chunk it was handed.
  const reuse = expect.compression === "none";
  let spare = new Uint8Array(0);
  try {
    job.fd = await open(path, "r");
    for (;;) {
      if (job.aborted) throw new Error("aborted");
      if (job.read < job.written) {
        const want = Math.min(READ_BYTES, job.written - job.read);
        if (reuse && spare.length < want) spare = new Uint8Array(want);
        const buf = reuse ? spare.subarray(0, want) : new Uint8Array(want);
        const { bytesRead } = await job.fd.read(buf, 0, buf.length, job.read);
        if (bytesRead === 0) throw new Error(`temp file ends at ${job.read}, ${job.written} bytes were written`);
        job.read += bytesRead;
        await job.verifier.write(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
        continue;
      }
      if (job.ended) break;
      await new Promise<void>((resolve) => (job.wake = resolve));
    }
    const digest = await job.verifier.end();
    post({ type: "verified", id, digest: chunks ? { ...digest, chunks: chunks.end() } : digest });
  } catch (err) {
    job.verifier.abort();
    if (!job.aborted) {
      const mismatch = err instanceof NarVerifyError;
      post({ type: "failed", id, mismatch, message: mismatch ? err.reason : (err as Error).message ?? String(err) });
    }
  } finally {
    jobs.delete(id);
    await job.fd?.close().catch(() => {});
  }
}

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const m = event.data;
  if (m.type === "start") return void run(m.id, m.path, m.expect, m.chunks);
  const job = jobs.get(m.id);
  if (!job) return;
  if (m.type === "written") job.written = m.bytes;
  else if (m.type === "end") {
    job.written = m.bytes;
    job.ended = true;
  } else job.aborted = true;
  wake(job);
};
