/** Which BlobStore a configuration names: a local directory, or an S3 bucket. */
import { mkdir } from "node:fs/promises";
import type { BlobStore } from "./blob-store.ts";
import { LocalBlobStore } from "./local.ts";
import type { S3BlobStoreOptions } from "./s3.ts";

export type StorageChoice = { local: string } | { s3: S3BlobStoreOptions };

/** Opens and checks the store (directory writable, bucket reachable). A local directory is
 * created 0700: it holds uploads, and usually the database with the signing key beside it;
 * an existing one keeps the mode its owner gave it. */
export async function openBlobStore(choice: StorageChoice): Promise<BlobStore> {
  let store: BlobStore;
  if ("local" in choice) {
    await mkdir(choice.local, { recursive: true, mode: 0o700 });
    store = new LocalBlobStore(choice.local);
  } else {
    // imported only when used: loading the AWS SDK costs about 200 ms
    const { S3BlobStore } = await import("./s3.ts");
    store = new S3BlobStore(choice.s3);
  }
  await store.check();
  return store;
}
