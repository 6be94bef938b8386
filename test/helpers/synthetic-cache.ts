/** A binary cache of synthetic store paths, signed with a key of its own, written as a
 * directory that `startUpstream` serves: for tests of the cache domain that need real
 * signed narinfos and NARs but not the Nix client. A NAR here is any bytes (ncps hashes NARs,
 * it does not parse them); NarHash and FileHash are computed from what is written. */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { compressionExtension, type Compression } from "../../src/nix/compression.ts";
import { serializeNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { formatPublicKey, generateSecretKey, signNarInfo, toPublicKey, type SecretKey } from "../../src/nix/signature.ts";

export interface SyntheticPath {
  /** the store path's hash part: GET /<hash>.narinfo */
  hash: string;
  storePath: string;
  /** the narinfo as served (signed) */
  narinfo: NarInfo;
  text: string;
  /** the uncompressed NAR and the file as served */
  nar: Uint8Array;
  file: Uint8Array;
}

export interface PathOptions {
  /** NAR size in bytes (random content), default 4096 */
  size?: number;
  /** the NAR's bytes, in place of random ones (compressible content) */
  nar?: Uint8Array;
  compression?: "none" | "zstd" | Exclude<Compression, "none" | "zstd">;
  references?: string[];
  /** changes made after hashing and before signing: e.g. a URL elsewhere */
  edit?: (narinfo: NarInfo) => NarInfo;
  /** changes made after signing (the signature no longer covers what they change, or
   * they touch unsigned fields): extra Sig lines, FileSize lies */
  afterSigning?: (narinfo: NarInfo) => NarInfo;
  /** the served file's bytes, when they are not the compressed NAR (a lying upstream) */
  fileBytes?: Uint8Array;
}

export interface SyntheticCache {
  dir: string;
  key: SecretKey;
  publicKey: string;
  add(name: string, opts?: PathOptions): Promise<SyntheticPath>;
}

export const sha256Nix32 = (bytes: Uint8Array) => `sha256:${encodeNix32(new Bun.CryptoHasher("sha256").update(bytes).digest())}`;

/** A response read to its end: status, body length and sha256 (rejects if the body breaks). */
export async function readDigest(res: Response): Promise<{ status: number; n: number; hash: string }> {
  const h = new Bun.CryptoHasher("sha256");
  let n = 0;
  for await (const chunk of res.body!) {
    h.update(chunk);
    n += chunk.length;
  }
  return { status: res.status, n, hash: `sha256:${encodeNix32(h.digest())}` };
}

function compress(c: Compression, nar: Uint8Array): Uint8Array {
  if (c === "none") return nar;
  if (c === "zstd") return Bun.zstdCompressSync(nar);
  // Other compressions: the bytes are what the test makes them (fileBytes); unverifiable
  // formats are exactly the case where ncps must not trust them.
  return nar;
}

export async function makeSyntheticCache(dir: string, keyName = "synthetic-upstream-1"): Promise<SyntheticCache> {
  await mkdir(join(dir, "nar"), { recursive: true });
  await writeFile(join(dir, "nix-cache-info"), "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n");
  const key = generateSecretKey(keyName);
  return {
    dir,
    key,
    publicKey: formatPublicKey(toPublicKey(key)),
    async add(name, opts = {}) {
      const compression = opts.compression ?? "none";
      const nar = opts.nar ?? crypto.getRandomValues(new Uint8Array(opts.size ?? 4096));
      const file = opts.fileBytes ?? compress(compression, nar);
      const fileHash = sha256Nix32(file);
      const hash = encodeNix32(crypto.getRandomValues(new Uint8Array(20)));
      const storePath = `/nix/store/${hash}-${name}`;
      let narinfo: NarInfo = {
        storePath,
        url: `nar/${fileHash.slice("sha256:".length)}.nar${compressionExtension(compression)}`,
        compression,
        fileHash,
        fileSize: file.length,
        narHash: sha256Nix32(nar),
        narSize: nar.length,
        references: opts.references ?? [],
        sigs: [],
        extra: [],
      };
      narinfo = signNarInfo(opts.edit ? opts.edit(narinfo) : narinfo, key);
      if (opts.afterSigning) narinfo = opts.afterSigning(narinfo);
      const text = serializeNarInfo(narinfo);
      await writeFile(join(dir, `${hash}.narinfo`), text);
      if (!/^[a-z]+:/.test(narinfo.url)) await Bun.write(join(dir, narinfo.url.split("?")[0]!), file);
      return { hash, storePath, narinfo, text, nar, file };
    },
  };
}
