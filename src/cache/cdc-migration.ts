/** `ncps migrate-nar-to-chunks` and `ncps migrate-chunks-to-nar`: convert stored NARs in place
 * between whole and chunked, each result verified against the NarHash before the old form
 * goes. Interrupted at any point, a re-run finishes the job: a NAR is converted by one
 * transaction (StoredNars' commits replace the record), and the old form's leftovers (a
 * whole NAR's file after its chunks were recorded; chunks no NAR holds) are removed by the
 * next run, the sweep, or fsck.
 *
 * Only NARs whose narinfos name them uncompressed (a `.nar` key) are chunked: a narinfo naming
 * the upstream's xz file may be held by clients (Nix keeps narinfos for a month), and those
 * would then get bytes they cannot decode. */
import { createWriteStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import type { MetadataStore, NarRecord } from "../db/metadata-store.ts";
import { forEachLimit } from "../for-each-limit.ts";
import { decompressStream } from "../nix/compression.ts";
import { NarVerifier } from "../nix/nar-verifier.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import type { Logger } from "../telemetry/logger.ts";
import { webStream } from "../streams.ts";
import { ChunkWriter } from "./chunk-writer.ts";
import type { ChunkSizes } from "./chunker.ts";
import { verifyStream } from "./verify-stored.ts";
import { storedAsZstd, uncompressedKey, type StoredNars } from "./stored-nars.ts";

export interface CdcMigrationOptions {
  db: MetadataStore;
  store: BlobStore;
  nars: StoredNars;
  sizes: ChunkSizes;
  tempDir: string;
  dryRun: boolean;
  /** NARs converted at once */
  concurrency: number;
  logger: Logger;
  progress?: (done: number, total: number | null) => void;
}

export interface CdcMigrationReport {
  /** converted (or, dry run, that would be) */
  converted: number;
  /** already in the wanted form */
  done: number;
  /** kept as they are: compressed narinfos (to chunks), or no narinfo names them */
  kept: number;
  failed: number;
}

type Step = (rec: NarRecord) => Promise<"converted" | "done" | "kept">;

async function eachNar(opts: CdcMigrationOptions, step: Step): Promise<CdcMigrationReport> {
  const report: CdcMigrationReport = { converted: 0, done: 0, kept: 0, failed: 0 };
  let seen = 0;
  let after: string | undefined;
  for (;;) {
    const page = await opts.db.listNars(100, after);
    if (page.length === 0) break;
    after = page.at(-1)!.key;
    await forEachLimit(page, Math.max(1, opts.concurrency), async (rec) => {
      try {
        report[await step(rec)]++;
      } catch (error) {
        report.failed++;
        opts.logger.error("NAR not converted", { key: rec.key, error });
      }
      opts.progress?.(++seen, null);
    });
  }
  return report;
}

/** Whole NARs named uncompressed become chunked. */
export function narsToChunks(opts: CdcMigrationOptions): Promise<CdcMigrationReport> {
  const { db, store, nars } = opts;
  return eachNar(opts, async (rec) => {
    if (rec.chunked) {
      // an earlier run recorded the chunks and stopped before removing the file
      if (!opts.dryRun && (await store.stat(rec.key))) await store.delete(rec.key);
      return "done";
    }
    const named = (await db.narInfosForNar(rec.key))[0];
    if (!uncompressedKey(rec.key) || !named) return "kept";
    if (opts.dryRun) return "converted";
    const blob = await store.get(rec.key);
    if (!blob) throw new Error(`NAR ${rec.key} is recorded but not in storage`);
    const body = webStream(blob.body);
    const nar = storedAsZstd(rec) ? await decompressStream("zstd", body) : body;
    const dir = await mkdtemp(join(opts.tempDir, "ncps-chunks-"));
    try {
      const writer = new ChunkWriter(opts.sizes, dir);
      const digest = await verifyStream(nar, { compression: "none", narSize: named.narSize, narHash: rec.narHash }, (b) => writer.write(b));
      await nars.commitChunks(rec.key, dir, { ...digest, chunks: writer.end() });
      await store.delete(rec.key);
      return "converted";
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

/** Chunked NARs become whole again (stored as uncompressed NARs are: zstd-compressed when
 * smaller), then the chunks no NAR holds any more are swept. */
export async function chunksToNars(opts: CdcMigrationOptions): Promise<CdcMigrationReport> {
  const { nars } = opts;
  const report = await eachNar(opts, async (rec) => {
    if (!rec.chunked) return "done";
    const chunked = await nars.openChunked(rec.key);
    if (!chunked) throw new Error(`chunked NAR ${rec.key} lists no chunks`);
    if (opts.dryRun) return "converted";
    const dir = await mkdtemp(join(opts.tempDir, "ncps-dechunk-"));
    try {
      const path = join(dir, "nar");
      const verifier = new NarVerifier({ compression: "none", narSize: chunked.narSize, narHash: rec.narHash });
      const file = createWriteStream(path);
      try {
        for await (const bytes of chunked.open()) {
          await verifier.write(bytes);
          if (!file.write(bytes)) await new Promise((resolve) => file.once("drain", resolve));
        }
        await new Promise<void>((resolve, reject) => file.end((err?: Error | null) => (err ? reject(err) : resolve())));
      } catch (err) {
        verifier.abort();
        file.destroy();
        throw err;
      }
      await nars.commitFile(rec.key, path, await verifier.end());
      return "converted";
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
  if (!opts.dryRun) await nars.chunks.sweep();
  return report;
}
