/** What the engines share: the shape of their rows and how a row becomes a record; for the
 * two server engines (postgres, mysql) also pool sizes and the retry of a write transaction
 * the server chose to abort. */
import type { ChunkRecord, ChunkState, NarInfoAge, NarInfoListing, NarInfoRecord, NarRecord, Pin, RealisationRecord } from "./metadata-store.ts";

/** Connection pool size; 0 or absent means the engine's default. */
export interface PoolSettings {
  maxOpenConns?: number;
  maxIdleConns?: number;
}

/** Defaults as in the Go ncps for PostgreSQL (25 open, 5 idle), used for MySQL too. */
export function poolSizes(pool: PoolSettings = {}): { maxOpen: number; maxIdle: number } {
  const maxOpen = pool.maxOpenConns && pool.maxOpenConns > 0 ? pool.maxOpenConns : 25;
  const maxIdle = pool.maxIdleConns && pool.maxIdleConns > 0 ? pool.maxIdleConns : 5;
  return { maxOpen, maxIdle: Math.min(maxIdle, maxOpen) };
}

/** Seconds to wait for a server to accept a connection and log in. */
export const DEFAULT_CONNECT_TIMEOUT_SECONDS = 5;

/** The narinfos columns in the order narInfoValues gives their values. */
export const NARINFO_COLUMNS = `hash, store_path, text, nar_key, upstream, upstream_nar_url, compression,
      file_hash, file_size, nar_hash, nar_size, created_at, last_accessed_at`;

export interface NarInfoRow {
  hash: string;
  store_path: string;
  text: string;
  nar_key: string;
  upstream: string | null;
  upstream_nar_url: string | null;
  compression: string;
  file_hash: string | null;
  file_size: number | null;
  nar_hash: string;
  nar_size: number;
  created_at: number;
}

export interface NarRow {
  key: string;
  size: number;
  file_hash: string | null;
  nar_hash: string;
  created_at: number;
  chunked: number;
}

export interface ChunkRow {
  hash: string;
  size: number;
  nar_bytes: number;
  stored?: number;
  doomed_at?: number | null;
}

export function chunkFromRow(row: ChunkRow): ChunkRecord {
  return { hash: row.hash, size: Number(row.size), narBytes: Number(row.nar_bytes) };
}

export function chunkStateOf(row: ChunkRow): ChunkState {
  return row.doomed_at != null ? "doomed" : Number(row.stored) ? "stored" : "unstored";
}

/** `references` in any order: records list them sorted. */
export function narInfoFromRow(row: NarInfoRow, references: readonly string[]): NarInfoRecord {
  return {
    hash: row.hash,
    storePath: row.store_path,
    text: row.text,
    narKey: row.nar_key,
    upstream: row.upstream,
    upstreamNarUrl: row.upstream_nar_url,
    compression: row.compression,
    fileHash: row.file_hash,
    fileSize: row.file_size === null ? null : Number(row.file_size),
    narHash: row.nar_hash,
    narSize: Number(row.nar_size),
    references: [...references].sort(),
    createdAt: Number(row.created_at),
  };
}

export function narFromRow(row: NarRow): NarRecord {
  const rec: NarRecord = { key: row.key, size: Number(row.size), fileHash: row.file_hash, narHash: row.nar_hash, createdAt: Number(row.created_at) };
  return Number(row.chunked) ? { ...rec, chunked: true } : rec;
}

/** The `after` of a first page: before every row (keys are never empty, times never negative),
 * so every paged listing is one statement. */
export const FIRST_AGE = { lastAccessedAt: Number.MIN_SAFE_INTEGER, hash: "" } as const;
export const FIRST_KEY = "";

/** The name of the running stored-bytes figure in the stats table. */
export const STORED_BYTES = "stored_bytes";

export interface NarInfoAgeRow {
  hash: string;
  nar_key: string;
  last_accessed_at: number;
  size: number;
}

export function narInfoAgeFromRow(row: NarInfoAgeRow): NarInfoAge {
  return { hash: row.hash, narKey: row.nar_key, lastAccessedAt: Number(row.last_accessed_at), size: Number(row.size) };
}

/** The columns narInfosByAge reads (FileSize, else NarSize, as the size). */
export const NARINFO_AGE_COLUMNS = "hash, nar_key, last_accessed_at, COALESCE(file_size, nar_size) AS size";

/** Keys per statement of a list write or read: a bound list of parameters, whatever the
 * caller asks. */
export const LIST_BATCH = 1000;

/** `keys` without duplicates, sorted, in chunks of LIST_BATCH. */
export function sortedChunks(keys: readonly string[]): string[][] {
  const sorted = sortedUnique(keys);
  const out: string[][] = [];
  for (let i = 0; i < sorted.length; i += LIST_BATCH) out.push(sorted.slice(i, i + LIST_BATCH));
  return out;
}

export interface NarInfoListingRow {
  hash: string;
  nar_key: string;
  upstream: string | null;
}

export function narInfoListingFromRow(row: NarInfoListingRow): NarInfoListing {
  return { hash: row.hash, narKey: row.nar_key, upstream: row.upstream };
}

export interface PinRow {
  hash: string;
  store_path: string;
  created_at: number;
}

export function pinFromRow(row: PinRow): Pin {
  return { hash: row.hash, storePath: row.store_path, createdAt: Number(row.created_at) };
}

/** Each hash asked for, with its references (sorted) from `rows` of (hash, reference). */
export function referencesByHash(hashes: readonly string[], rows: readonly { hash: string; reference: string }[]): Map<string, string[]> {
  const out = new Map<string, string[]>(hashes.map((h) => [h, []]));
  for (const r of rows) out.get(r.hash)?.push(r.reference);
  for (const refs of out.values()) refs.sort();
  return out;
}

/** Keys without duplicates, in a fixed order (so concurrent writers lock rows alike). */
export function sortedUnique(keys: readonly string[]): string[] {
  return [...new Set(keys)].sort();
}

/** The narinfo columns in insert order, with their values from a record. */
export function narInfoValues(rec: NarInfoRecord): (string | number | null)[] {
  return [
    rec.hash,
    rec.storePath,
    rec.text,
    rec.narKey,
    rec.upstream,
    rec.upstreamNarUrl,
    rec.compression,
    rec.fileHash,
    rec.fileSize,
    rec.narHash,
    rec.narSize,
    rec.createdAt,
    rec.createdAt, // last_accessed_at starts at creation
  ];
}

/** The nars columns (key, size, file_hash, nar_hash, created_at, last_accessed_at) in
 * insert order, with their values from a record. */
export function narValues(rec: NarRecord): (string | number | null)[] {
  return [rec.key, rec.size, rec.fileHash, rec.narHash, rec.createdAt, rec.createdAt, rec.chunked ? 1 : 0]; // last_accessed_at starts at creation
}

/** Runs `fn` again (a few times) when the server aborted it to break a deadlock between
 * concurrent writers; each try must be a whole transaction. */
export async function retryAborted<T>(isAborted: (err: unknown) => boolean, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= 5 || !isAborted(err)) throw err;
      await Bun.sleep(attempt * 5 * Math.random());
    }
  }
}

/** The realisations columns in the order realisationValues gives their values. */
export const REALISATION_COLUMNS = "id, out_path, out_hash, text, upstream, created_at";

export interface RealisationRow {
  id: string;
  out_path: string;
  text: string;
  upstream: string | null;
  created_at: number;
}

export function realisationFromRow(row: RealisationRow): RealisationRecord {
  return { id: row.id, outPath: row.out_path, text: row.text, upstream: row.upstream, createdAt: Number(row.created_at) };
}

/** The realisation columns in insert order; out_hash is the output's hash part, what removing
 * that path's narinfo looks realisations up by. */
export function realisationValues(rec: RealisationRecord): (string | number | null)[] {
  return [rec.id, rec.outPath, rec.outPath.slice(0, 32), rec.text, rec.upstream, rec.createdAt];
}
