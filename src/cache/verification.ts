/** Verification of downloads on a thread of its own (verify-worker.ts).
 *
 * Why: hashing and decompressing on the one JavaScript thread paced every download by its
 * decompressor and held up everything else, hits included. Measured with bench/miss-path.ts
 * (2 cores, nginx upstream on loopback): before, one cold 200 MiB uncompressed NAR took 1.35 s
 * against 0.16 s direct, and narinfo-hit p99 went from 4 ms to 200 ms during 8 misses. The
 * worker reads the temp file behind the download, so the download runs at the upstream's
 * speed and only the last byte of each response waits for the verdict. */
import { NarVerifyError, type NarDigest, type NarExpectation } from "../nix/nar-verifier.ts";
import { workerEntry } from "../worker-entry.ts";
import type { ChunkSizes } from "./chunker.ts";
import type { WrittenChunk } from "./chunk-writer.ts";

/** Chunk the NAR while verifying it: its new chunks are written into `dir`. */
export interface ChunkJob {
  sizes: ChunkSizes;
  dir: string;
}

/** What a verification found: the digest, and the NAR's chunks when it was asked to chunk. */
export type VerifiedNar = NarDigest & { chunks?: WrittenChunk[] };

export type ToWorker =
  | { type: "start"; id: number; path: string; expect: NarExpectation; chunks?: ChunkJob }
  | { type: "written"; id: number; bytes: number }
  | { type: "end"; id: number; bytes: number }
  | { type: "abort"; id: number };

export type ToMain =
  | { type: "verified"; id: number; digest: VerifiedNar }
  | { type: "failed"; id: number; mismatch: boolean; message: string };

/** One file being verified: report how far it is written, then its end; `result` settles with
 * the digest, or rejects (a NarVerifyError when the bytes do not match) as soon as known. */
export interface Verification {
  written(bytes: number): void;
  end(bytes: number): void;
  abort(): void;
  readonly result: Promise<VerifiedNar>;
}

/** The verification thread hears how far a file is written once per this many bytes (and at
 * its end), and reads that much at once: told of every write (64-256 KiB each), it read
 * and hashed in as many small steps, and cost 1.4-2 s of CPU per 512 MiB of eight 64 MiB
 * misses where the hashing itself is 0.3 s. It never holds the download back: at most this
 * much is left to verify when the last byte arrives (and a corrupt compressed byte is found
 * at most this much later). */
const WRITTEN_STEP = 1024 * 1024;

/** How long an idle verification thread is kept for the next download. */
const IDLE_MS = 5_000;

interface Pending {
  resolve(digest: VerifiedNar): void;
  reject(err: Error): void;
}

/** The verification thread, started on first use and restarted after a crash (which fails
 * the verifications it was running, never silently passes them). */
export class Verifier {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;

  private thread(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(workerEntry("cache/verify-worker.ts", new URL("./verify-worker.ts", import.meta.url)));
    worker.onmessage = (event: MessageEvent<ToMain>) => {
      const m = event.data;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.type === "verified") p.resolve(m.digest);
      else p.reject(m.mismatch ? new NarVerifyError(m.message) : new Error(`verification failed: ${m.message}`));
      this.idle();
    };
    worker.onerror = (event) => {
      const err = new Error(`verification thread crashed: ${event.message}`);
      this.worker = null;
      worker.terminate();
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    this.worker = worker;
    return worker;
  }

  /** An idle thread does not keep the process alive (a CLI run ends when its work does), and
   * after IDLE_MS it is ended: its decoders' memory (xz keeps tens of MB) goes with it, so
   * the resident size returns to where it was before the download. */
  private idle() {
    if (this.pending.size > 0 || !this.worker) return;
    this.worker.unref();
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      if (this.pending.size === 0) this.close();
    }, IDLE_MS);
    this.idleTimer.unref?.();
  }

  start(path: string, expect: NarExpectation, chunks?: ChunkJob): Verification {
    const id = this.nextId++;
    const worker = this.thread();
    clearTimeout(this.idleTimer);
    worker.ref();
    const result = new Promise<VerifiedNar>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    result.catch(() => {}); // observed by the caller; never an unhandled rejection here
    const send = (message: ToWorker) => this.worker === worker && worker.postMessage(message);
    send({ type: "start", id, path, expect, ...(chunks ? { chunks } : {}) });
    let told = 0;
    return {
      // Told in steps, not per write: each message wakes the thread for a read of its own
      written: (bytes) => {
        if (bytes - told < WRITTEN_STEP) return;
        told = bytes;
        send({ type: "written", id, bytes });
      },
      end: (bytes) => send({ type: "end", id, bytes }),
      abort: () => {
        send({ type: "abort", id });
        const p = this.pending.get(id);
        this.pending.delete(id);
        p?.reject(new Error("verification aborted"));
        this.idle();
      },
      result,
    };
  }

  close() {
    this.worker?.terminate();
    this.worker = null;
  }
}

/** The one verification thread every download and every re-check shares. */
export const verificationThread = new Verifier();
