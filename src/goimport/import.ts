/** Bringing a Go ncps's narinfos and NARs into this ncps. Each narinfo is taken the way an
 * upload is: its NAR copied out of the Go storage into a temp file, verified there against
 * the narinfo (FileHash and FileSize, and NarHash and NarSize, which the Go ncps never
 * checked), committed through StoredNars, and only then the narinfo recorded, rewritten and
 * signed by this ncps. So a crash at any point leaves either nothing of that narinfo, or a
 * recorded NAR whose narinfo the next run adds; and a narinfo this ncps holds already is
 * skipped with one primary-key lookup, which is what makes a re-run cheap. */
import { copyFile, rm } from "node:fs/promises";
import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createZstdDecompress } from "node:zlib";
import type { ReadableStream as NodeWebStream } from "node:stream/web";
import type { MetadataStore } from "../db/metadata-store.ts";
import { narInfoRecord } from "../cache/narinfo-record.ts";
import { recordPin } from "../cache/pins.ts";
import type { StoredNars } from "../cache/stored-nars.ts";
import { tempFileName } from "../cache/temp-files.ts";
import { verificationThread } from "../cache/verification.ts";
import { parseCompression, unverifiableCompression, type Compression } from "../nix/compression.ts";
import { NixFormatError } from "../nix/errors.ts";
import { ncpsNarKey } from "../nix/nar-url.ts";
import { NarVerifyError } from "../nix/nar-verifier.ts";
import { parseNarInfo, serializeNarInfo, type NarInfo } from "../nix/narinfo.ts";
import type { SecretKey } from "../nix/signature.ts";
import { isStorePathHash, parseStorePath } from "../nix/store-path.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import { validateKey } from "../storage/keys.ts";
import { LocalBlobStore } from "../storage/local.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { GoDatabase, GoNarInfoFields, GoNarInfoRow } from "../db/go-database.ts";
import { goChunkKey, goNarInfoKey, goNarKey } from "./go-storage.ts";

export interface ImportOptions {
  goDb: GoDatabase;
  /** the Go ncps's storage, only read */
  goStore: BlobStore;
  db: MetadataStore;
  nars: StoredNars;
  /** this ncps's key (null: narinfos are not signed, --cache-sign-narinfo off) */
  signingKey: SecretKey | null;
  tempDir: string;
  acceptUnverifiedCompression: boolean;
  logger: Logger;
  /** narinfos worked on at once */
  concurrency?: number;
  progress?: (p: ImportProgress) => void;
  /** stop taking new narinfos (an interrupt); those under way finish */
  stopped?: () => boolean;
}

export interface ImportProgress {
  done: number;
  total: number;
}

export interface Skipped {
  hash: string;
  storePath: string | null;
  reason: string;
}

export interface ImportReport {
  /** narinfos in the Go database */
  total: number;
  imported: number;
  /** held by this ncps already (an earlier run) */
  present: number;
  /** narinfos not imported (each has a warn log line) */
  skipped: number;
  /** the first SKIPPED_LISTED of them, for the summary */
  firstSkipped: Skipped[];
  /** NAR bytes copied and verified */
  bytes: number;
  /** pins of the Go ncps now held here (added by this run or an earlier one) */
  pins: number;
  /** pinned hashes whose narinfo was not imported, so not pinned */
  pinsSkipped: string[];
  /** an interrupt stopped the run before the end */
  interrupted: boolean;
}

const PAGE = 200;
/** Skipped narinfos kept for the summary: the log has every one, and memory stays bounded. */
export const SKIPPED_LISTED = 20;
const DEFAULT_CONCURRENCY = 4;

/** A narinfo that cannot be imported: reported, skipped, never fatal. */
class Skip extends Error {}

export async function importGoNcps(opts: ImportOptions): Promise<ImportReport> {
  const total = await opts.goDb.countNarInfos();
  const report: ImportReport = { total, imported: 0, present: 0, skipped: 0, firstSkipped: [], bytes: 0, pins: 0, pinsSkipped: [], interrupted: false };
  // two narinfos naming one NAR: the second waits for the first's commit, then finds it
  const commits = new Map<string, Promise<void>>();
  let done = 0;
  let afterId = 0;
  const concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY;
  opts.progress?.({ done, total });
  for (;;) {
    const page = await opts.goDb.narInfos(afterId, PAGE);
    if (page.length === 0) break;
    afterId = page[page.length - 1]!.id;
    let next = 0;
    const worker = async () => {
      while (next < page.length && !opts.stopped?.()) {
        const row = page[next++]!;
        const outcome = await importOne(opts, row, commits);
        if (outcome === "present") report.present++;
        else if (typeof outcome === "number") {
          report.imported++;
          report.bytes += outcome;
        } else if (report.skipped++ < SKIPPED_LISTED) report.firstSkipped.push(outcome);
        done++;
        opts.progress?.({ done, total: Math.max(total, done) });
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, page.length) }, worker));
    // stopped with narinfos of this page not taken: the rest waits for the next run
    if (next < page.length) {
      report.interrupted = true;
      return report;
    }
  }
  await importPins(opts, report);
  return report;
}

/** The Go pins, once every narinfo is in: a pin needs its narinfo (for its store path, and as
 * in the Go ncps, which refuses to pin what it does not hold). */
async function importPins(opts: ImportOptions, report: ImportReport): Promise<void> {
  for (const hash of await opts.goDb.pinnedHashes()) {
    // a bare hash only: recordPin would take a store path's name for a narinfo it lacks
    const pinned = isStorePathHash(hash) ? await recordPin(opts.db, hash) : null;
    if (pinned) report.pins++;
    else {
      report.pinsSkipped.push(hash);
      opts.logger.warn("pin not imported: its narinfo was not imported", { hash });
    }
  }
}

/** "present", the NAR bytes copied (0 when another narinfo brought the NAR), or why skipped. */
async function importOne(opts: ImportOptions, row: GoNarInfoRow, commits: Map<string, Promise<void>>): Promise<"present" | number | Skipped> {
  let storePath: string | null = row.fields?.storePath ?? null;
  try {
    if ((await opts.db.getNarInfoText(row.hash)) !== null) return "present";
    const narinfo = await readNarInfo(opts, row);
    storePath = narinfo.storePath;
    if (parseStorePath(narinfo.storePath).hashPart !== row.hash) throw new Skip(`narinfo is for ${narinfo.storePath}, not ${row.hash}`);
    const source = await narSource(opts, row, narinfo);
    const { key, compression } = source;
    let copied = 0;
    if ((await opts.nars.find(key)) === null) {
      const running = commits.get(key);
      if (running) await running;
      if ((await opts.nars.find(key)) === null) {
        const commit = copyVerifyCommit(opts, narinfo, source);
        commits.set(key, commit.then(() => {}, () => {})); // the waiter looks for the record, not the outcome
        try {
          copied = await commit;
        } finally {
          commits.delete(key);
        }
      }
    }
    const record = narInfoRecord(row.hash, narinfo, { key, compression }, { upstream: null, upstreamNarUrl: null }, opts.signingKey);
    // false: a running ncps recorded this narinfo meanwhile; the NAR goes unless it names it
    if (!(await opts.db.insertNarInfoIfAbsent(record))) await opts.nars.removeIfUnnamed(key);
    return copied;
  } catch (err) {
    if (!(err instanceof Skip || err instanceof NixFormatError || err instanceof NarVerifyError)) throw err;
    const reason = err instanceof NarVerifyError ? `NAR does not match the narinfo: ${err.message}` : err.message;
    opts.logger.warn("narinfo not imported", { hash: row.hash, storePath, reason });
    return { hash: row.hash, storePath, reason };
  }
}

/** The narinfo: from the database's columns (Go v0.8 on), else the text in storage; parsed by
 * this ncps's one narinfo parser either way, so both get the same checks. */
async function readNarInfo(opts: ImportOptions, row: GoNarInfoRow): Promise<NarInfo> {
  if (row.fields) return parseNarInfo(narInfoText(row.fields));
  const body = await opts.goStore.get(goNarInfoKey(row.hash));
  if (!body) throw new Skip(`its narinfo is neither in the Go database nor in the Go storage (${goNarInfoKey(row.hash)})`);
  return parseNarInfo(await new Response(body.body).text());
}

/** The Go columns written as a narinfo text (what the Go ncps serves from them). */
export function narInfoText(f: GoNarInfoFields): string {
  if (f.storePath === null || f.narHash === null || f.narSize === null) throw new Skip("the Go database row lacks StorePath, NarHash or NarSize");
  const narinfo: NarInfo = {
    storePath: f.storePath,
    url: f.url,
    narHash: f.narHash,
    narSize: f.narSize,
    references: f.references,
    sigs: f.signatures,
    extra: [],
  };
  if (f.compression !== null) narinfo.compression = f.compression;
  if (f.fileHash !== null) narinfo.fileHash = f.fileHash;
  if (f.fileSize !== null) narinfo.fileSize = f.fileSize;
  if (f.deriver !== null) narinfo.deriver = f.deriver;
  if (f.system !== null) narinfo.system = f.system;
  if (f.ca !== null) narinfo.ca = f.ca;
  return serializeNarInfo(narinfo);
}

/** Where the Go ncps holds a narinfo's NAR, and what it becomes here. */
type NarSource = { key: string; compression: Compression } & ({ file: string } | { chunks: string[] });

/** The whole file the narinfo's URL names; failing that, the CDC chunks of its NAR, which are
 * the uncompressed NAR and are kept here as such (Compression: none, under its NarHash). */
async function narSource(opts: ImportOptions, row: GoNarInfoRow, narinfo: NarInfo): Promise<NarSource> {
  const compression = parseCompression(narinfo.compression);
  const file = goNarKey(narinfo.url, narinfo.narHash);
  if ((await opts.goStore.stat(file)) === null) {
    const chunks = await opts.goDb.chunks(row.id);
    if (chunks === null) throw new Skip(`its NAR is not in the Go storage (${file})`);
    if (chunks.length === 0) throw new Skip("the Go ncps holds its NAR as CDC chunks, but not all of them are recorded");
    return { key: ncpsNarKey(narinfo.narHash, "none"), compression: "none", chunks };
  }
  const unverifiable = unverifiableCompression(compression, opts.acceptUnverifiedCompression);
  if (unverifiable) throw new Skip(unverifiable);
  return { key: ncpsNarKey(narinfo.fileHash ?? narinfo.narHash, compression), compression, file };
}

/** Copy the NAR out of the Go storage into a temp file, verify it on the verification thread,
 * commit it through StoredNars (which consumes the temp file). Returns the bytes copied. */
async function copyVerifyCommit(opts: ImportOptions, narinfo: NarInfo, source: NarSource): Promise<number> {
  const path = join(opts.tempDir, tempFileName("import", source.key));
  try {
    const size = "file" in source ? await copyOut(opts.goStore, source.file, path) : await joinChunks(opts.goStore, source.chunks, path);
    if (size === null) throw new Skip(`its NAR is no longer in the Go storage (${"file" in source ? source.file : "a chunk is missing"})`);
    const whole = "file" in source;
    const check = verificationThread.start(path, {
      compression: source.compression,
      fileHash: whole ? (narinfo.fileHash ?? null) : null,
      fileSize: whole ? (narinfo.fileSize ?? null) : null,
      narHash: narinfo.narHash,
      narSize: narinfo.narSize,
    });
    check.end(size);
    const digest = await check.result;
    await opts.nars.commitFile(source.key, path, digest);
    return size;
  } finally {
    await rm(path, { force: true });
  }
}

/** The chunks, each decompressed (the Go ncps stores them zstd-compressed), one after the
 * other into `path`; their total size, or null when one is missing. */
async function joinChunks(store: BlobStore, hashes: string[], path: string): Promise<number | null> {
  const out = createWriteStream(path);
  try {
    for (const hash of hashes) {
      const body = await store.get(goChunkKey(hash));
      if (!body) return null;
      const stream = body.body instanceof Blob ? body.body.stream() : body.body;
      try {
        await pipeline(Readable.fromWeb(stream as NodeWebStream<Uint8Array>), createZstdDecompress(), out, { end: false });
      } catch (err) {
        const code = String((err as NodeJS.ErrnoException).code ?? "");
        if (code.startsWith("ZSTD_")) throw new Skip(`its CDC chunk ${hash} in the Go storage is not zstd: ${(err as Error).message}`);
        throw err;
      }
    }
  } finally {
    // after a failed chunk the stream is destroyed already; a short file fails verification
    await new Promise<void>((resolve) => (out.destroyed ? resolve() : out.end(() => resolve())));
  }
  return Bun.file(path).size;
}

/** The object's bytes in a file at `path`; its size, or null when there is no such object. */
async function copyOut(store: BlobStore, key: string, path: string): Promise<number | null> {
  if (store instanceof LocalBlobStore) {
    // a plain copy (the kernel's, where it can): never a rename of the Go ncps's file
    validateKey(key);
    try {
      await copyFile(join(store.rootDir, key), path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
    return Bun.file(path).size;
  }
  const body = await store.get(key);
  if (!body) return null;
  const stream = body.body instanceof Blob ? body.body.stream() : body.body;
  await pipeline(Readable.fromWeb(stream as NodeWebStream<Uint8Array>), createWriteStream(path));
  return Bun.file(path).size;
}
