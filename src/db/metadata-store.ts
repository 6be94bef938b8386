/** The metadata of what the cache holds. One contract, three engines (sqlite, postgres, mysql),
 * shared by every replica: each method is one transaction (or one statement), so a reader never
 * sees half of a write, and writes of several rows lock them in one order (no deadlock
 * between replicas). */

/** A narinfo as ncps serves it: already rewritten and signed, rendered once at ingest. */
export interface NarInfoRecord {
  /** the 32-char store path hash part, the key of `/<hash>.narinfo` */
  hash: string;
  storePath: string;
  /** the narinfo text served to clients, byte for byte */
  text: string;
  /** our NAR key (`nar/<hash>.nar.xz`), which the text's URL names */
  narKey: string;
  /** upstream base URL it came from, or null for uploads */
  upstream: string | null;
  /** full upstream URL of the NAR, query string included, or null for uploads */
  upstreamNarUrl: string | null;
  compression: string;
  fileHash: string | null;
  fileSize: number | null;
  narHash: string;
  narSize: number;
  /** references as store path base names (`<hash>-<name>`) */
  references: string[];
  createdAt: number;
}

/** A NAR object present in blob storage (only complete, verified objects are recorded). */
export interface NarRecord {
  key: string;
  /** bytes stored under the key: 0 for a chunked NAR, whose bytes are its chunks' */
  size: number;
  fileHash: string | null;
  narHash: string;
  createdAt: number;
  /** stored as content-defined chunks (`narChunks`), not under its key */
  chunked?: boolean;
}

/** A content-defined chunk, stored once as `chunk/<hash>` however many NARs hold it. */
export interface ChunkRecord {
  /** SHA-256 of the chunk's bytes, hex */
  hash: string;
  /** bytes stored: the chunk's zstd frame */
  size: number;
  /** bytes of NAR the chunk holds */
  narBytes: number;
}

/** "stored": its blob is written; "unstored": reserved, its blob maybe not written yet (by a
 * commit running or one that died); "doomed": being removed, never to be relied on. */
export type ChunkState = "stored" | "unstored" | "doomed";

/** One narinfo in LRU order: eviction's unit and cursor. */
export interface NarInfoAge {
  hash: string;
  narKey: string;
  lastAccessedAt: number;
  /** the NAR bytes the narinfo declares (FileSize, else NarSize): what removing it may free */
  size: number;
}

/** A narinfo as fsck lists it. */
export interface NarInfoListing {
  hash: string;
  narKey: string;
  upstream: string | null;
}

/** A realisation of a content-addressed derivation output, as ncps serves it. */
export interface RealisationRecord {
  /** the derivation output: `sha256:<hex>!<output>` or `<drv>^<output>` (nix/realisation.ts) */
  id: string;
  /** the output's store path base name */
  outPath: string;
  /** the document served, byte for byte (re-signed at ingest) */
  text: string;
  /** upstream base URL it came from, or null for uploads */
  upstream: string | null;
  createdAt: number;
}

/** A pinned narinfo hash protects its whole closure (references, transitively) from eviction. */
export interface Pin {
  hash: string;
  storePath: string;
  createdAt: number;
}

export interface StoredCounts {
  narInfos: number;
  nars: number;
}

/** Outcomes, for every method: "absent" is a value (null, false, an empty list), never a
 * throw. A throw is the database failing (unreachable, locked past its busy timeout, read-only,
 * a constraint a caller should have prevented) and carries the driver's error, its code
 * included (SQLITE_BUSY, SQLITE_READONLY, a Postgres SQLSTATE...), so the caller can tell
 * "cannot write now" from a bug. Calls after close throw. */
export interface MetadataStore {
  readonly dialect: "sqlite" | "postgres" | "mysql";
  /** Apply pending migrations in order, under the engine's lock so replicas starting together
   * apply each once; returns the names applied (with dryRun: the names that would be, and
   * nothing is applied). Idempotent: none pending returns []. A failing migration throws and
   * is not recorded as applied. */
  migrate(opts?: { dryRun?: boolean }): Promise<string[]>;
  /** Every known migration, in order, and whether it is applied. Read-only. */
  migrationStatus(): Promise<{ name: string; applied: boolean }[]>;

  /** The narinfo text to serve, or null when there is none. Hot path: one indexed lookup. */
  getNarInfoText(hash: string): Promise<string | null>;
  /** The whole record, references included, or null when there is none. */
  getNarInfo(hash: string): Promise<NarInfoRecord | null>;
  /** Insert or replace the record for `rec.hash`, its references with it (one transaction).
   * Idempotent. Does not need the NAR's record to exist. */
  putNarInfo(rec: NarInfoRecord): Promise<void>;
  /** Insert only if absent; returns false if a record already existed (left unchanged).
   * Atomic across replicas: of concurrent inserts of one hash exactly one returns true. */
  insertNarInfoIfAbsent(rec: NarInfoRecord): Promise<boolean>;
  /** Remove the record and its references, and the realisations whose output is that path
   * (one transaction); false when there was no narinfo. Idempotent. The NAR record it named
   * stays (removing it is StoredNars' decision). */
  deleteNarInfo(hash: string): Promise<boolean>;
  /** narinfos whose NAR is `narKey`, references included; empty when none. */
  narInfosForNar(narKey: string): Promise<NarInfoRecord[]>;

  /** The record of a stored NAR, or null when there is none. */
  getNar(key: string): Promise<NarRecord | null>;
  /** Insert or replace the record for `rec.key`; the stored-bytes figure changes in the same
   * transaction (by the size, or by the difference from the replaced record). */
  putNar(rec: NarRecord): Promise<void>;
  /** False when there was no record; the stored-bytes figure loses its size in the same
   * transaction. */
  deleteNar(key: string): Promise<boolean>;

  /** Sum of recorded NAR sizes and chunk sizes: a running figure that putNar/deleteNar keep in the same
   * transaction as their write (a replaced record adds the difference). One row read. Exact
   * under concurrent writers on any number of connections (NAR record writes take the
   * figure's row lock, so they commit one at a time). */
  storedBytes(): Promise<number>;
  /** How many narinfos and NAR records there are (a count of rows: for metrics, read rarely). */
  storedCounts(): Promise<StoredCounts>;
  /** Set the running figure to SUM(size) of the records; returns both (fsck). */
  recountStoredBytes(): Promise<{ before: number; after: number }>;
  /** Narinfos, least recently used first (last_accessed_at, then hash), strictly after
   * `after`, at most `limit`: eviction walks them with this cursor. */
  narInfosByAge(limit: number, after?: { lastAccessedAt: number; hash: string }): Promise<NarInfoAge[]>;
  /** Eviction's batch writes, each one transaction (or statement) for the whole list.
   * Narinfos deleted (their references, and the realisations whose output they are, with
   * them); returns how many narinfos there were. */
  deleteNarInfos(hashes: string[]): Promise<number>;
  /** The keys among `narKeys` that some narinfo names. */
  namedNarKeys(narKeys: string[]): Promise<Set<string>>;
  /** NAR records deleted, the stored-bytes figure lowered by their sizes in the same
   * transaction; returns the records that were there. */
  deleteNars(keys: string[]): Promise<NarRecord[]>;
  /** Direct references (store path base names, sorted) of each given narinfo hash: every
   * hash asked for has an entry, empty when it has none or no narinfo. */
  referencesOf(hashes: string[]): Promise<Map<string, string[]>>;
  /** Paged listings in key order, strictly after `after` (fsck). */
  listNarInfos(limit: number, after?: string): Promise<NarInfoListing[]>;
  listNars(limit: number, after?: string): Promise<NarRecord[]>;

  /** The realisation of a derivation output, or null when there is none. */
  getRealisation(id: string): Promise<RealisationRecord | null>;
  /** Insert only if absent; false when one was there (left unchanged). Of concurrent inserts
   * of one id exactly one returns true. Needs no narinfo of its output path. */
  insertRealisationIfAbsent(rec: RealisationRecord): Promise<boolean>;
  /** Chunks a NAR being committed will hold, before their blobs are written: absent ones are
   * inserted unstored (their sizes join the stored-bytes figure), and the last use of every
   * one not doomed is set to `at`, so no sweep dooms it for its grace period. Returns the
   * state of each after. */
  reserveChunks(chunks: ChunkRecord[], at: number): Promise<Map<string, ChunkState>>;
  /** The chunks' blobs are written. */
  markChunksStored(hashes: string[]): Promise<void>;
  /** Record a chunked NAR (size 0, chunked) with its chunks in order, replacing any record of
   * its key, in one transaction that first sets the chunks' last use to `at`. False, and
   * nothing written, when any of them is doomed or gone (the caller reserves them again). */
  putChunkedNar(rec: NarRecord, chunkHashes: string[], at: number): Promise<boolean>;
  /** One chunk's record and state, or null when there is none. */
  getChunk(hash: string): Promise<(ChunkRecord & { state: ChunkState }) | null>;
  /** The chunks of a chunked NAR, in order; empty when it has none. */
  narChunks(key: string): Promise<ChunkRecord[]>;
  /** Dooms at most `limit` chunks that no NAR holds and that were last used before
   * `usedBefore`, and returns them with any doomed earlier (a sweep that stopped half way):
   * their blobs are to be deleted, then `deleteDoomedChunks`. */
  doomUnusedChunks(usedBefore: number, limit: number, at: number): Promise<ChunkRecord[]>;
  /** Doomed chunk rows deleted (their blobs deleted first); the stored-bytes figure loses
   * their sizes in the same transaction. Returns how many there were. */
  deleteDoomedChunks(hashes: string[]): Promise<number>;
  /** Paged listing in hash order (fsck). */
  listChunks(limit: number, after?: string): Promise<(ChunkRecord & { state: ChunkState })[]>;

  /** False when the hash was already pinned (the pin is left unchanged). */
  addPin(pin: Pin): Promise<boolean>;
  /** False when the hash was not pinned. */
  removePin(hash: string): Promise<boolean>;
  /** Every pin, oldest first. */
  listPins(): Promise<Pin[]>;

  /** Batched access-time update (called from a timer, never per request): sets the access
   * time of these narinfos and of their NARs to `at`, in one transaction. Unknown hashes and
   * duplicates are ignored; an empty list does nothing. */
  touch(hashes: string[], at: number): Promise<void>;

  /** A stored setting, or null when it was never set. */
  getConfig(key: string): Promise<string | null>;
  /** Insert or replace a setting. Idempotent. */
  setConfig(key: string, value: string): Promise<void>;
  /** Set only if absent; returns the value now stored (first writer wins across replicas, and
   * every replica gets the winner's value). */
  setConfigIfAbsent(key: string, value: string): Promise<string>;

  /** Close the connections; later calls throw. */
  close(): Promise<void>;
}
