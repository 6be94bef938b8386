/** The key rules every BlobStore backend applies: callers validate keys already; this is the
 * last line of defence before the filesystem or the bucket, the same for both. */
import { InvalidBlobKeyError } from "./blob-store.ts";

/** Throws InvalidBlobKeyError for anything that is not a plain relative path of non-empty
 * segments, none starting with "." (dot names are the local store's own temp files). */
export function validateKey(key: string): void {
  if (typeof key !== "string" || key === "") throw new InvalidBlobKeyError("blob key is empty");
  const why = unsafePathReason(key);
  if (why) throw new InvalidBlobKeyError(`blob key ${JSON.stringify(key.slice(0, 200))} ${why}`);
  for (const segment of key.split("/")) {
    if (segment === "") throw new InvalidBlobKeyError(`blob key ${JSON.stringify(key.slice(0, 200))} has an empty path segment`);
    if (segment.startsWith(".")) throw new InvalidBlobKeyError(`blob key ${JSON.stringify(key.slice(0, 200))} has a segment starting with "."`);
  }
}

/** A list prefix may be "" or end in "/", but may not escape the store. */
export function checkPrefix(prefix: string): void {
  const why = unsafePathReason(prefix);
  if (why) throw new InvalidBlobKeyError(`blob key prefix ${JSON.stringify(prefix.slice(0, 200))} ${why}`);
}

function unsafePathReason(path: string): string | null {
  if (path.startsWith("/")) return "is absolute";
  if (path.includes("..")) return 'contains ".."';
  if (path.includes("\\")) return "contains a backslash";
  if (path.includes("\0")) return "contains a NUL byte";
  return null;
}
