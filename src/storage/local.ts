/** BlobStore on a local directory. Objects appear by rename only, so readers see nothing or
 * the whole object; reads are `Bun.file` blobs, which Bun.serve sends with sendfile. */
import { randomBytes } from "node:crypto";
import { constants, type Dirent } from "node:fs";
import { copyFile, lstat, mkdir, open, opendir, readdir, rename, rm, stat, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { madeByEndedRun, runTag } from "../run-tag.ts";
import { errnoReason } from "../errors.ts";
import { TooLargeError } from "../streams.ts";
import { BlobRangeError, type BlobBody, type BlobListEntry, type BlobStat, type BlobStore, type ByteRange } from "./blob-store.ts";
import { checkPrefix, validateKey } from "./keys.ts";

/** Temp files of putStream live here, on the same filesystem as the objects; putFile's
 * cross-filesystem copies are `.tmp-<pid>-<run>-<hex>` next to their destination. */
const TMP_DIR = ".tmp";
/** A temp name made by this run (see run-tag.ts). */
const tempName = () => `${runTag}-${randomBytes(8).toString("hex")}`;

export class LocalBlobStore implements BlobStore {
  constructor(readonly rootDir: string) {}

  /** Called at start: besides checking, removes the temp files a killed run left. */
  async check(): Promise<void> {
    const tmp = join(this.rootDir, TMP_DIR);
    try {
      await mkdir(tmp, { recursive: true });
    } catch (err) {
      throw new Error(`storage directory ${this.rootDir} cannot be created: ${errnoReason(err)}`);
    }
    // a real write: access(W_OK) says yes to root on a read-only mount
    const probe = join(tmp, `check-${randomBytes(6).toString("hex")}`);
    try {
      const fh = await open(probe, "wx");
      await fh.close();
      await unlink(probe);
    } catch (err) {
      throw new Error(`storage directory ${this.rootDir} is not writable: ${errnoReason(err)}`);
    }
    await this.removeStaleTempFiles();
  }

  /** Temp files of runs that are over: in .tmp, and `.tmp-*` copies anywhere in the tree (a
   * kill -9 during a cross-filesystem putFile). Names without a run tag come from versions
   * before the tag and are stale too. Returns how many were removed. */
  async removeStaleTempFiles(): Promise<number> {
    const paths = await this.staleTempFiles();
    for (const path of paths) await rm(path, { force: true });
    return paths.length;
  }

  /** The paths removeStaleTempFiles would remove (fsck reports them). */
  async staleTempFiles(): Promise<string[]> {
    const found: string[] = [];
    const stale = (tagged: string) => madeByEndedRun(tagged) ?? true;
    const visit = async (dir: string): Promise<void> => {
      let entries: Dirent[];
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
        throw err;
      }
      for (const entry of entries) {
        const path = join(dir, entry.name);
        if (dir === this.rootDir && entry.name === TMP_DIR) {
          for (const name of await readdir(path).catch(() => [] as string[])) {
            if (stale(name)) found.push(join(path, name));
          }
        } else if (entry.isDirectory() && !entry.name.startsWith(".")) {
          await visit(path);
        } else if (entry.isFile() && entry.name.startsWith(`${TMP_DIR}-`) && stale(entry.name.slice(TMP_DIR.length + 1))) {
          found.push(path);
        }
      }
    };
    await visit(this.rootDir);
    return found;
  }

  async stat(key: string): Promise<BlobStat | null> {
    const st = await statFile(this.pathOf(key));
    return st ? { size: st.size } : null;
  }

  /** A range's end past the object is clamped (as HTTP does); a start past it throws BlobRangeError. */
  async get(key: string, range?: ByteRange): Promise<BlobBody | null> {
    const path = this.pathOf(key);
    const st = await statFile(path);
    if (!st) return null;
    const size = st.size;
    const file = Bun.file(path);
    if (!range) return { body: file, length: size, size };
    if (!Number.isSafeInteger(range.start) || !Number.isSafeInteger(range.end) || range.start < 0 || range.start > range.end || range.start >= size) {
      throw new BlobRangeError(range, size);
    }
    const end = Math.min(range.end, size - 1);
    return { body: file.slice(range.start, end + 1), length: end - range.start + 1, size };
  }

  async putFile(key: string, sourcePath: string): Promise<void> {
    const dest = this.pathOf(key);
    await mkdir(dirname(dest), { recursive: true });
    await syncFile(sourcePath);
    try {
      await rename(sourcePath, dest);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
    }
    // Another filesystem: copy next to the destination, then rename within it.
    const temp = join(dirname(dest), `${TMP_DIR}-${tempName()}`);
    try {
      await copyFile(sourcePath, temp, constants.COPYFILE_EXCL);
      await syncFile(temp);
      await rename(temp, dest);
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
    await unlink(sourcePath);
  }

  /** Not part of BlobStore (nothing in the cache streams into storage; see S3BlobStore's):
   * stores a stream under `key` through a temp file and a rename, so readers see nothing or
   * the whole object; nothing is left behind if the stream errors or passes `maxBytes`
   * (TooLargeError), and the stream is cancelled then. Returns the number of bytes stored. */
  async putStream(key: string, body: ReadableStream<Uint8Array>, maxBytes?: number): Promise<number> {
    let dest: string;
    try {
      dest = this.pathOf(key);
    } catch (err) {
      await body.cancel(err).catch(() => {});
      throw err;
    }
    const tmpDir = join(this.rootDir, TMP_DIR);
    await mkdir(tmpDir, { recursive: true });
    const temp = join(tmpDir, tempName());
    const reader = body.getReader();
    const fh = await open(temp, "wx");
    let written = 0;
    try {
      // one chunk in memory at a time: read, write it out, then read the next
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        written += value.byteLength;
        if (maxBytes !== undefined && written > maxBytes) throw new TooLargeError(maxBytes);
        let offset = 0;
        while (offset < value.byteLength) {
          const { bytesWritten } = await fh.write(value, offset, value.byteLength - offset);
          offset += bytesWritten;
        }
      }
      await fh.sync();
      await fh.close();
      await mkdir(dirname(dest), { recursive: true });
      await rename(temp, dest);
      return written;
    } catch (err) {
      await fh.close().catch(() => {});
      await rm(temp, { force: true });
      // stop the producer when we are the ones giving up (harmless if it already failed)
      await reader.cancel(err).catch(() => {});
      throw err;
    } finally {
      reader.releaseLock();
    }
  }

  async delete(key: string): Promise<boolean> {
    try {
      await unlink(this.pathOf(key));
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") return false;
      throw err;
    }
  }

  /** Keys starting with `prefix`, walking only the directories that can hold them; one
   * directory page at a time, so memory stays small whatever the number of objects. */
  async *list(prefix: string): AsyncIterable<BlobListEntry> {
    checkPrefix(prefix);
    const slash = prefix.lastIndexOf("/");
    const startDir = slash === -1 ? "" : prefix.slice(0, slash);
    // no key has a dot segment: do not walk into .tmp and the like
    if (startDir.split("/").some((segment) => segment.startsWith("."))) return;
    yield* this.walk(startDir, prefix);
  }

  private async *walk(relDir: string, prefix: string): AsyncGenerator<BlobListEntry> {
    let dir;
    try {
      dir = await opendir(relDir === "" ? this.rootDir : join(this.rootDir, relDir));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") return;
      throw err;
    }
    for await (const entry of dir as AsyncIterable<Dirent>) {
      // dot names are the store's own (temp files, .tmp): never keys
      if (entry.name.startsWith(".")) continue;
      const key = relDir === "" ? entry.name : `${relDir}/${entry.name}`;
      if (entry.isDirectory()) {
        // descend only where keys can still match the prefix
        if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* this.walk(key, prefix);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        const st = await lstat(join(this.rootDir, key)).catch(() => null);
        if (st?.isFile()) yield { key, size: st.size, modifiedAt: st.mtimeMs };
      }
    }
  }

  /** The file of a key; throws InvalidBlobKeyError for anything that is not a plain relative path. */
  private pathOf(key: string): string {
    validateKey(key);
    return join(this.rootDir, key);
  }
}

async function statFile(path: string) {
  try {
    const st = await stat(path);
    return st.isFile() ? st : null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw err;
  }
}

/** Flush a file's data before it gets its final name, so a crash cannot leave a recorded
 * object that is empty or short. */
async function syncFile(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
