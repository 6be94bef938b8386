/** Where NAR bytes (and build logs) live: the contract every backend (local.ts, s3.ts) keeps,
 * and the errors it may throw. Keys are relative paths such as `nar/<hash>.nar.xz` or
 * `log/<drv>`; callers validate them, and every backend checks them again (keys.ts). */

/** A key (or list prefix) that could escape the store or collide with its own files: a bug
 * or hostile input, never a missing object (HTTP 400). */
export class InvalidBlobKeyError extends Error {
  override name = "InvalidBlobKeyError";
}

/** A range that starts past the end of the object, or is malformed (HTTP 416). */
export class BlobRangeError extends Error {
  override name = "BlobRangeError";
  constructor(
    readonly range: ByteRange,
    readonly size: number,
  ) {
    super(`range ${range.start}-${range.end} is not satisfiable for an object of ${size} bytes`);
  }
}

export interface BlobStat {
  size: number;
}

export interface BlobListEntry {
  key: string;
  size: number;
  /** Unix milliseconds: local file mtime, S3 LastModified */
  modifiedAt: number;
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

/** Every method throws InvalidBlobKeyError for a key keys.ts refuses, before any I/O (a
 * refused putFile leaves its source file in place). Any other throw is the backend failing
 * (I/O error, bucket unreachable): callers pass it on as a fault, never as "absent".
 * Objects are only ever seen whole: no method returns a partly written one. */
export interface BlobStore {
  /** Check the backend is usable (directory writable, bucket reachable); throws an Error whose
   * message is one line naming the backend and the reason. Called once at start; may also
   * tidy what a killed run left (local: stale temp files). */
  check(): Promise<void>;
  /** The object's size, or null when there is no object under `key`. */
  stat(key: string): Promise<BlobStat | null>;
  /** The object, or null when there is none. With a range: a range whose end is past the
   * object is clamped (as HTTP does); one that starts past the end, or is malformed, throws
   * BlobRangeError. The caller owns the returned body and must consume or cancel it (a
   * stream left unread holds a connection to the bucket). Nothing is promised about a body
   * whose object is replaced or deleted before it is read through. */
  get(key: string, range?: ByteRange): Promise<BlobBody | null>;
  /** Move a complete, verified local file into the store under `key`, replacing any object
   * there. Atomic: readers see the old object (or nothing) until the new one is whole.
   * Concurrent puts of one key end with one of them whole. On success the source file is
   * gone (consumed); on a throw it may or may not still exist, and the caller removes it.
   * Idempotent for equal bytes (replicas committing the same NAR). */
  putFile(key: string, sourcePath: string): Promise<void>;
  /** Remove the object; true if there was one, false if there was none (not an error).
   * Idempotent. */
  delete(key: string): Promise<boolean>;
  /** Every key starting with `prefix` (a plain string prefix, "" for all), with its size, in
   * no particular order, fetched a page at a time so memory stays small. Never yields the
   * store's own temp files or unfinished uploads. Throws InvalidBlobKeyError for a prefix
   * that could escape the store. Objects put or deleted during the walk may or may not show.
   * `modifiedAt` (Unix ms) is when the object was last put: fsck leaves younger strays alone. */
  list(prefix: string): AsyncIterable<BlobListEntry>;
}
