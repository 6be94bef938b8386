/** Where NAR bytes (and build logs) live. Keys are relative paths such as
 * `nar/<hash>.nar.xz` or `log/<drv>`; they are validated by callers before they get here. */

export interface BlobStat {
  size: number;
}

export interface ByteRange {
  /** inclusive */
  start: number;
  /** inclusive */
  end: number;
}

/** A readable object: `body` is a Blob (local files: Bun sends it with sendfile) or a stream. */
export interface BlobBody {
  body: Blob | ReadableStream<Uint8Array>;
  /** length of `body` (the range length for a ranged read) */
  length: number;
  /** full object size */
  size: number;
}

export interface BlobStore {
  readonly kind: "local" | "s3";
  /** Check the backend is usable (directory writable, bucket reachable); throw a clear Error otherwise. */
  check(): Promise<void>;
  stat(key: string): Promise<BlobStat | null>;
  get(key: string, range?: ByteRange): Promise<BlobBody | null>;
  /** Move a complete, verified local file into the store under `key`, atomically:
   * readers see either nothing or the whole object. The source file is consumed. */
  putFile(key: string, sourcePath: string): Promise<void>;
  /** Store a stream under `key`, atomically; nothing is left behind if the stream errors.
   * Returns the number of bytes stored. */
  putStream(key: string, body: ReadableStream<Uint8Array>, maxBytes?: number): Promise<number>;
  delete(key: string): Promise<boolean>;
  /** Keys under `prefix`, in pages. */
  list(prefix: string): AsyncIterable<{ key: string; size: number }>;
}
