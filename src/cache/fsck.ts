/** `ncps fsck`: does what the database says agree with what storage holds? Modelled on the Go
 * ncps's fsck, in two phases so that it can run against a live cache:
 *
 * 1. Scan: list storage (`nar/`), walk the NAR records and the narinfos a page at a time, and
 *    note suspects. The walks are not one snapshot, so a NAR committed or removed meanwhile
 *    can look wrong here.
 * 2. Re-check: read each suspect's current state again; only what is still wrong is a
 *    problem. With `repair`, each problem is checked once more just before it is repaired.
 *
 * Repairs go through StoredNars, like every other removal: a NAR whose bytes cannot be served
 * is forgotten (record and bytes), to be fetched again on the next request; narinfos naming
 * it stay when their upstream is still configured, else they go too, so a second run finds
 * nothing. Memory: one entry per stored object and per NAR record (the two sides are
 * compared in memory instead of one storage request per record, which on S3 would be one
 * HEAD per NAR); bench/fsck.ts measures it. */
import { rm, stat } from "node:fs/promises";
import type { ChunkRecord, MetadataStore, NarInfoRecord, NarRecord } from "../db/metadata-store.ts";
import { parseCompression } from "../nix/compression.ts";
import { NarVerifyError } from "../nix/nar-verifier.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import { sameUpstream } from "../upstream/upstream-url.ts";
import type { StoredNars } from "./stored-nars.ts";
import { chunkKey } from "./chunk-writer.ts";
import { GRACE_MS } from "./chunk-store.ts";

export type CheckId =
  | "narinfo-without-nar"
  | "nar-without-narinfo"
  | "nar-bytes-missing"
  | "corrupt-nar"
  | "corrupt-chunk"
  | "stray-blob"
  | "unused-chunks"
  | "temp-file"
  | "stored-bytes";

/** The checks, in the order they are repaired and reported. */
export const fsckChecks: readonly { id: CheckId; title: string }[] = [
  { id: "narinfo-without-nar", title: "narinfos whose NAR is gone for good" },
  { id: "nar-without-narinfo", title: "NAR records no narinfo names" },
  { id: "nar-bytes-missing", title: "NAR records whose bytes are missing or short" },
  { id: "corrupt-nar", title: "stored NARs failing FileHash/NarHash" },
  { id: "corrupt-chunk", title: "chunks whose bytes do not hash to their name" },
  { id: "stray-blob", title: "blobs in storage without a record" },
  { id: "unused-chunks", title: "chunks no NAR holds, past their grace" },
  { id: "temp-file", title: "temp files left by a stopped ncps" },
  { id: "stored-bytes", title: "running total of stored bytes" },
];

export interface FsckProgress {
  phase: "storage" | "nars" | "narinfos" | "verify" | "re-check" | "repair";
  done: number;
  /** null when unknown; for the database walks an estimate (the count of the previous
   * phase: about one record per object, one narinfo per record) */
  total: number | null;
}

export interface FsckOptions {
  db: MetadataStore;
  store: BlobStore;
  nars: StoredNars;
  /** Upstream URLs configured now, as Upstream.url gives them (upstreamIdentity): a narinfo
   * from one of them without its NAR is normal (the NAR is fetched on request); one from
   * elsewhere, or uploaded, cannot get its NAR back. */
  upstreams: readonly string[];
  /** Paths of temp files no running ncps uses (the temp directory's, local storage's own). */
  staleTempFiles: () => Promise<string[]>;
  /** Unrecorded blobs younger than this are left alone: an upload whose narinfo may still come. */
  strayGraceMs: number;
  /** Re-hash every stored NAR against its FileHash and NarHash (reads every byte). */
  verifyContent: boolean;
  repair: boolean;
  progress?: (p: FsckProgress) => void;
  now?: () => number;
  /** rows per database page */
  pageSize?: number;
  /** NARs verified at once with verifyContent */
  verifyConcurrency?: number;
}

export interface FsckProblem {
  check: CheckId;
  /** the narinfo hash, NAR key, path or figure concerned */
  subject: string;
  repaired: boolean;
}

export interface FsckCheckResult {
  id: CheckId;
  title: string;
  /** false for corrupt-nar without verifyContent */
  checked: boolean;
  found: number;
  repaired: number;
}

export interface FsckReport {
  checks: FsckCheckResult[];
  problems: FsckProblem[];
  /** problems found and not repaired: the exit status is non-zero while this is not 0 */
  remaining: number;
}

interface Suspect {
  check: CheckId;
  subject: string;
  /** re-reads the current state: still a problem? */
  confirm(): Promise<boolean>;
  repair(): Promise<void>;
}

export async function fsck(opts: FsckOptions): Promise<FsckReport> {
  const { db, store, nars } = opts;
  const now = opts.now ?? Date.now;
  const pageSize = opts.pageSize ?? 1000;
  const progress = opts.progress ?? (() => {});
  const refetchable = (n: Pick<NarInfoRecord, "upstream">) => opts.upstreams.some((url) => sameUpstream(n.upstream, url));
  const suspects: Suspect[] = [];

  // --- phase 1: scan ---------------------------------------------------------------------
  const scanStart = now();
  const stored = new Map<string, { size: number; modifiedAt: number }>();
  for await (const item of store.list("nar/")) {
    stored.set(item.key, { size: item.size, modifiedAt: item.modifiedAt });
    if (stored.size % 1000 === 0) progress({ phase: "storage", done: stored.size, total: null });
  }
  // chunks (content-defined chunking): one entry per blob, as for NARs
  const chunkBlobs = new Map<string, { size: number; modifiedAt: number }>();
  for await (const item of store.list("chunk/")) chunkBlobs.set(item.key, { size: item.size, modifiedAt: item.modifiedAt });
  progress({ phase: "storage", done: stored.size + chunkBlobs.size, total: stored.size + chunkBlobs.size });
  const chunkOk = (c: ChunkRecord) => chunkBlobs.get(chunkKey(c.hash))?.size === c.size;

  /** recorded NAR key -> whether a narinfo names it */
  const recorded = new Map<string, boolean>();
  const objects = stored.size;
  const totalBefore = await db.storedBytes();
  let recordedBytes = 0;
  for await (const rec of pages((after) => db.listNars(pageSize, after), (r) => r.key)) {
    recordedBytes += rec.size;
    recorded.set(rec.key, false);
    if (rec.chunked) {
      if (!(await db.narChunks(rec.key)).every(chunkOk)) suspects.push(bytesMissing(rec.key));
      continue;
    }
    const object = stored.get(rec.key);
    stored.delete(rec.key);
    if (!object || object.size !== rec.size) suspects.push(bytesMissing(rec.key));
    if (recorded.size % 1000 === 0) progress({ phase: "nars", done: recorded.size, total: Math.max(objects, recorded.size) });
  }
  progress({ phase: "nars", done: recorded.size, total: recorded.size });
  for await (const c of pages((after) => db.listChunks(pageSize, after), (c) => c.hash)) {
    recordedBytes += c.size;
    const blob = chunkBlobs.get(chunkKey(c.hash));
    chunkBlobs.delete(chunkKey(c.hash));
    if (opts.verifyContent && blob?.size === c.size && !(await nars.chunks.holds(c))) suspects.push(corruptChunk(c));
  }
  const totalAfter = await db.storedBytes();

  let narInfoCount = 0;
  for await (const n of pages((after) => db.listNarInfos(pageSize, after), (n) => n.hash)) {
    if (recorded.has(n.narKey)) recorded.set(n.narKey, true);
    else if (!refetchable(n)) suspects.push(narInfoWithoutNar(n.hash));
    if (++narInfoCount % 1000 === 0) progress({ phase: "narinfos", done: narInfoCount, total: Math.max(recorded.size, narInfoCount) });
  }
  progress({ phase: "narinfos", done: narInfoCount, total: narInfoCount });

  for (const [key, named] of recorded) if (!named) suspects.push(narWithoutNarInfo(key));
  for (const [key, object] of stored) if (object.modifiedAt <= scanStart - opts.strayGraceMs) suspects.push(strayBlob(key));
  stored.clear();
  // a chunk blob without a row: a commit that died between writing it and recording it
  for (const [key, object] of chunkBlobs) if (object.modifiedAt <= scanStart - Math.max(opts.strayGraceMs, GRACE_MS)) suspects.push(strayChunk(key));
  chunkBlobs.clear();
  for (const path of await opts.staleTempFiles()) suspects.push(tempFile(path));

  // The running total and the records change in one transaction: equal totals before and
  // after the walk mean no NAR was written meanwhile, so the walk's sum must match it.
  // (With writes during the walk the comparison says nothing; --repair recounts anyway.)
  let totalDrift: string | null = null;
  if (totalBefore === totalAfter && recordedBytes !== totalAfter) {
    totalDrift = `running total ${totalAfter} bytes, records sum to ${recordedBytes}`;
  }

  if (opts.verifyContent) {
    const missing = new Set(suspects.filter((s) => s.check === "nar-bytes-missing").map((s) => s.subject));
    await verifyAll(missing, recordedBytes);
  }
  recorded.clear();

  // --- phase 2: re-check, then repair -----------------------------------------------------
  const problems: FsckProblem[] = [];
  const confirmed: Suspect[] = [];
  for (const [i, s] of suspects.entries()) {
    if (await s.confirm()) confirmed.push(s);
    progress({ phase: "re-check", done: i + 1, total: suspects.length });
  }
  const order = fsckChecks.map((c) => c.id);
  confirmed.sort((a, b) => order.indexOf(a.check) - order.indexOf(b.check));
  for (const [i, s] of confirmed.entries()) {
    let repaired = false;
    if (opts.repair) {
      // Once more: an earlier repair may have settled it (a narinfo's removal takes its bytes).
      if (await s.confirm()) await s.repair();
      repaired = true;
      progress({ phase: "repair", done: i + 1, total: confirmed.length });
    }
    problems.push({ check: s.check, subject: s.subject, repaired });
  }

  // After the repairs (which may leave chunks no NAR holds): the sweep eviction also runs.
  if (opts.repair) {
    const swept = await nars.chunks.sweep(now());
    if (swept.chunks > 0) problems.push({ check: "unused-chunks", subject: `${swept.chunks} chunks (${swept.bytes} bytes)`, repaired: true });
  }

  // Last, after the repairs (which keep the total in step): the recount makes it exact.
  if (opts.repair) {
    const { before, after } = await db.recountStoredBytes();
    if (before !== after) problems.push({ check: "stored-bytes", subject: `running total ${before} bytes, records sum to ${after}`, repaired: true });
  } else if (totalDrift !== null) {
    problems.push({ check: "stored-bytes", subject: totalDrift, repaired: false });
  }

  const checks = fsckChecks.map(({ id, title }) => {
    const mine = problems.filter((p) => p.check === id);
    return { id, title, checked: (id !== "corrupt-nar" && id !== "corrupt-chunk") || opts.verifyContent, found: mine.length, repaired: mine.filter((p) => p.repaired).length };
  });
  return { checks, problems, remaining: problems.filter((p) => !p.repaired).length };

  // --- the suspects -----------------------------------------------------------------------

  function narInfoWithoutNar(hash: string): Suspect {
    return {
      check: "narinfo-without-nar",
      subject: hash,
      confirm: async () => {
        const n = await db.getNarInfo(hash);
        return n !== null && !refetchable(n) && (await db.getNar(n.narKey)) === null;
      },
      // the narinfo, and the NAR's bytes if any are stored and nothing else names them
      repair: async () => void (await nars.removeNarInfo(hash)),
    };
  }

  function narWithoutNarInfo(key: string): Suspect {
    return {
      check: "nar-without-narinfo",
      subject: key,
      confirm: async () => (await db.getNar(key)) !== null && (await db.narInfosForNar(key)).length === 0,
      repair: () => nars.removeIfUnnamed(key),
    };
  }

  function bytesMissing(key: string): Suspect {
    return {
      check: "nar-bytes-missing",
      subject: key,
      confirm: async () => {
        const rec = await db.getNar(key);
        if (!rec) return false;
        if (rec.chunked) {
          for (const c of await db.narChunks(key)) if ((await store.stat(chunkKey(c.hash)))?.size !== c.size) return true;
          return false;
        }
        const object = await store.stat(key);
        return object === null || object.size !== rec.size;
      },
      repair: async () => void (await nars.forget(key, refetchable)),
    };
  }

  /** A chunk whose blob does not hold what its name says: the NARs holding it are found by
   * the corrupt-nar check (--verify-content) and forgotten there; the chunk itself is
   * removed by the sweep once none holds it. */
  function corruptChunk(c: ChunkRecord): Suspect {
    return { check: "corrupt-chunk", subject: chunkKey(c.hash), confirm: async () => !(await nars.chunks.holds(c)), repair: async () => {} };
  }

  function strayChunk(key: string): Suspect {
    const hash = key.slice(key.lastIndexOf("/") + 1);
    return {
      check: "stray-blob",
      subject: key,
      confirm: async () => (await db.getChunk(hash)) === null && (await store.stat(key)) !== null,
      repair: async () => void (await store.delete(key)),
    };
  }


  function corruptNar(key: string): Suspect {
    return {
      check: "corrupt-nar",
      subject: key,
      confirm: async () => {
        const rec = await db.getNar(key);
        return rec !== null && (await verifyFails(rec));
      },
      repair: async () => void (await nars.forget(key, refetchable)),
    };
  }

  function strayBlob(key: string): Suspect {
    return {
      check: "stray-blob",
      subject: key,
      confirm: async () => (await db.getNar(key)) === null && (await store.stat(key)) !== null,
      repair: async () => void (await nars.forget(key, refetchable)),
    };
  }

  function tempFile(path: string): Suspect {
    return {
      check: "temp-file",
      subject: path,
      confirm: async () => (await stat(path).catch(() => null)) !== null,
      repair: () => rm(path, { recursive: true, force: true }),
    };
  }

  /** True when the stored bytes do not match the record (and a narinfo naming it, which
   * holds NarSize and the compression); false when they match or cannot be checked here
   * (no narinfo names it, the bytes are gone: other checks report those). */
  async function verifyFails(rec: NarRecord): Promise<boolean> {
    if (rec.chunked) return !(await nars.chunkedMatches(rec));
    const n = (await db.narInfosForNar(rec.key))[0];
    if (!n) return false;
    try {
      await nars.verifyStaged(rec.key, { compression: parseCompression(n.compression), fileSize: rec.size, fileHash: rec.fileHash, narSize: n.narSize, narHash: rec.narHash });
      return false;
    } catch (err) {
      if (err instanceof NarVerifyError) return true;
      if ((await store.stat(rec.key)) === null) return false;
      throw err;
    }
  }

  async function verifyAll(skip: ReadonlySet<string>, totalBytes: number): Promise<void> {
    let bytes = 0;
    const running = new Set<Promise<void>>();
    const limit = Math.max(1, opts.verifyConcurrency ?? 4);
    for await (const rec of pages((after) => db.listNars(pageSize, after), (r) => r.key)) {
      if (skip.has(rec.key)) continue;
      const job: Promise<void> = verifyFails(rec).then((bad) => {
        running.delete(job);
        if (bad) suspects.push(corruptNar(rec.key));
        bytes += rec.size;
        progress({ phase: "verify", done: bytes, total: totalBytes });
      });
      running.add(job);
      if (running.size >= limit) await Promise.race(running);
    }
    await Promise.all(running);
  }
}

/** Every row of a keyset-paged listing. */
async function* pages<T>(page: (after: string | undefined) => Promise<T[]>, keyOf: (row: T) => string): AsyncGenerator<T> {
  let after: string | undefined;
  for (;;) {
    const rows = await page(after);
    yield* rows;
    const last = rows[rows.length - 1];
    if (last === undefined) return;
    after = keyOf(last);
  }
}
