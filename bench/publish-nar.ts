/** Publishes a NAR in a static binary cache directory as a Nix cache lays one out: the file
 * under `nar/`, named by its FileHash, and a narinfo signed by the bench's upstream key. What
 * the benchmarks put nginx (or a bare upstream server) in front of. */
import { copyFile, link, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { encodeNix32 } from "../src/nix/nix32.ts";
import { serializeNarInfo } from "../src/nix/narinfo.ts";
import { formatPublicKey, generateSecretKey, signNarInfo, toPublicKey } from "../src/nix/signature.ts";
import { compressionExtension, type Compression } from "../src/nix/compression.ts";

/** The key every benchmark's upstream signs with. */
export const upstreamKey = generateSecretKey("bench-upstream-1");
/** `upstreamKey` as --cache-upstream-public-key takes it. */
export const upstreamPublicKey = formatPublicKey(toPublicKey(upstreamKey));

export interface PublishedNar {
  /** the narinfo's hash part: `<cacheDir>/<storeHash>.narinfo` */
  storeHash: string;
  /** the NAR file's path relative to the cache, as the narinfo's URL names it */
  narUrl: string;
  fileSize: number;
  /** "sha256:<nix32>" */
  narHash: string;
  narSize: number;
}

/** A file's facts, by path: a bench publishes one raw NAR several times (once per
 * compression), and the files do not change while it runs. */
const factsOfFile = new Map<string, Promise<{ hash: string; size: number }>>();

/** "sha256:<nix32>" and the length of `bytes`, or of the file at that path. */
export function sha256Of(bytes: Uint8Array | string): Promise<{ hash: string; size: number }> {
  if (typeof bytes !== "string") return hashChunks([bytes]);
  let facts = factsOfFile.get(bytes);
  if (!facts) factsOfFile.set(bytes, (facts = hashChunks(Bun.file(bytes).stream())));
  return facts;
}

async function hashChunks(chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<{ hash: string; size: number }> {
  const hasher = new Bun.CryptoHasher("sha256");
  let size = 0;
  for await (const chunk of chunks) {
    hasher.update(chunk);
    size += chunk.length;
  }
  return { hash: `sha256:${encodeNix32(hasher.digest())}`, size };
}

/** Publishes a NAR given as bytes or as a file (hard-linked, else copied; `file` in
 * `compression` when it is not the NAR itself). The store path's hash is random. */
export async function publishNar(
  cacheDir: string,
  nar: { name: string; bytes: Uint8Array } | { name: string; path: string; file?: string; compression?: Compression },
): Promise<PublishedNar> {
  const compression = "path" in nar ? (nar.compression ?? "none") : "none";
  const narFacts = await sha256Of("path" in nar ? nar.path : nar.bytes);
  const fileFacts = "path" in nar && nar.file && nar.file !== nar.path ? await sha256Of(nar.file) : narFacts;
  const storeHash = encodeNix32(crypto.getRandomValues(new Uint8Array(20)));
  const narUrl = `nar/${fileFacts.hash.slice("sha256:".length)}.nar${compressionExtension(compression)}`;
  await mkdir(join(cacheDir, "nar"), { recursive: true });
  if ("bytes" in nar) await Bun.write(join(cacheDir, narUrl), nar.bytes);
  else {
    await linkOrCopy(nar.file ?? nar.path, join(cacheDir, narUrl));
  }
  const narinfo = signNarInfo(
    {
      storePath: `/nix/store/${storeHash}-${nar.name}`,
      url: narUrl,
      compression,
      fileHash: fileFacts.hash,
      fileSize: fileFacts.size,
      narHash: narFacts.hash,
      narSize: narFacts.size,
      references: [],
      sigs: [],
      extra: [],
    },
    upstreamKey,
  );
  await writeFile(join(cacheDir, `${storeHash}.narinfo`), serializeNarInfo(narinfo));
  await writeFile(join(cacheDir, "nix-cache-info"), "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n");
  return { storeHash, narUrl, fileSize: fileFacts.size, narHash: narFacts.hash, narSize: narFacts.size };
}

/** `dest` as a hard link to `source` (the bench's NARs are hundreds of MiB), a copy where
 * the two are on different file systems; one already there is kept (the benches' cache
 * directories are fresh, or name NARs by their contents). */
export async function linkOrCopy(source: string, dest: string): Promise<void> {
  await link(source, dest).catch((err: NodeJS.ErrnoException) => (err.code === "EEXIST" ? undefined : copyFile(source, dest)));
}
