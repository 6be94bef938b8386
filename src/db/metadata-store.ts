/** The metadata of what the cache holds. One contract, three engines (sqlite, postgres, mysql). */

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
  size: number;
  fileHash: string | null;
  narHash: string;
  createdAt: number;
}

export interface MetadataStore {
  readonly dialect: "sqlite" | "postgres" | "mysql";
  /** Apply pending migrations; returns the names applied. */
  migrate(opts?: { dryRun?: boolean }): Promise<string[]>;
  migrationStatus(): Promise<{ name: string; applied: boolean }[]>;

  /** Hot path: one indexed lookup. */
  getNarInfoText(hash: string): Promise<string | null>;
  getNarInfo(hash: string): Promise<NarInfoRecord | null>;
  /** Insert or replace the record for `rec.hash`. */
  putNarInfo(rec: NarInfoRecord): Promise<void>;
  /** Insert only if absent; returns false if a record already existed (left unchanged). */
  insertNarInfoIfAbsent(rec: NarInfoRecord): Promise<boolean>;
  deleteNarInfo(hash: string): Promise<boolean>;
  /** narinfos whose NAR is `narKey` */
  narInfosForNar(narKey: string): Promise<NarInfoRecord[]>;

  getNar(key: string): Promise<NarRecord | null>;
  putNar(rec: NarRecord): Promise<void>;
  deleteNar(key: string): Promise<boolean>;

  /** Batched access-time update (called from a timer, never per request). */
  touch(hashes: string[], at: number): Promise<void>;

  getConfig(key: string): Promise<string | null>;
  setConfig(key: string, value: string): Promise<void>;
  /** Set only if absent; returns the value now stored (first writer wins across replicas). */
  setConfigIfAbsent(key: string, value: string): Promise<string>;

  close(): Promise<void>;
}
