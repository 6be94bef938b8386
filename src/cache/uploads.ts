/** Writes from clients: `nix copy --to` (NAR then narinfo), `nix store copy-log --to`, and
 * deletes. Every refusal is a Refusal with a one-line reason and leaves storage and database
 * as they were; only verified objects are recorded. */
import { open, rm } from "node:fs/promises";
import { join } from "node:path";
import type { MetadataStore, NarInfoRecord } from "../db/metadata-store.ts";
import type { Locker } from "../lock/locker.ts";
import { parseCompression, unverifiableCompression } from "../nix/compression.ts";
import { canonicalHash } from "../nix/hash.ts";
import { parseNcpsNarRequest, type NcpsNarRequest } from "../nix/nar-url.ts";
import { NarVerifyError } from "../nix/nar-verifier.ts";
import { parseNarInfo, type NarInfo } from "../nix/narinfo.ts";
import { encodeNix32 } from "../nix/nix32.ts";
import { verifyNarInfo, type PublicKey, type SecretKey } from "../nix/signature.ts";
import { parseStorePath, parseStorePathBaseName } from "../nix/store-path.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { UpstreamPool } from "../upstream/pool.ts";
import { readLimited, TooLargeError, writeAll } from "../streams.ts";
import { asBadRequest, Busy, Refusal, UpstreamsFailed } from "./errors.ts";
import { tempFileName } from "./temp-files.ts";
import { narInfoRecord } from "./narinfo-record.ts";
import type { StoredNars } from "./stored-nars.ts";

export interface UploadOptions {
  db: MetadataStore;
  /** build logs live here, beside the NARs */
  store: BlobStore;
  pool: UpstreamPool;
  signingKey: SecretKey;
  signNarInfo: boolean;
  tempDir: string;
  maxUploadBytes: number;
  /** bzip2, lzip and lz4 NARs are accepted on FileHash alone (else refused) */
  acceptUnverifiedCompression: boolean;
  /** When set, an uploaded narinfo must carry a valid signature by one of these. */
  trustedUploadKeys: PublicKey[] | null;
  /** uploaded NARs are staged, verified, recorded and removed through it */
  nars: StoredNars;
  /** narinfos naming one NAR are accepted one at a time (the download lock's locker) */
  locker: Locker;
  logger: Logger;
}

/** A narinfo is a few hundred bytes; this bounds what a client can make us buffer. */
const MAX_NARINFO_BYTES = 1024 * 1024;

/** References of one upload that are not in ncps and get looked up upstream. `nix copy`
 * uploads a path's references before it, so these are normally few; the longest direct
 * reference lists in nixpkgs (buildEnv outputs such as a NixOS system-path) run to hundreds.
 * One narinfo listing one reference 3,000 times once took 3,000 lookups over 133 s (44 ms
 * each); 1,000 distinct lookups at the concurrency below take about 6 s at that rate. */
const MAX_UPSTREAM_REFERENCE_CHECKS = 1000;
/** Upstream lookups one upload runs at once: hides the latency, leaves the upstreams and the
 * pool's connections to the clients that are substituting. */
const REFERENCE_LOOKUP_CONCURRENCY = 8;
/** Build logs fetched from upstreams at once: each is held whole in memory until relayed (up
 * to 64 MiB), so many requests for logs, or one upstream answering each with 64 MiB, would
 * otherwise hold that many times over. Past this a request is answered 503 at once. */
const LOG_FETCHES_AT_ONCE = 2;

export type WriteResult = "created" | "unchanged";

function checkDeclaredLength(length: number | null, max: number) {
  if (length !== null && length > max) throw new Refusal("too-large", `body of ${length} bytes exceeds the limit of ${max}`);
}

/** A small document's body (a narinfo, a realisation) as text; refused when it is missing
 * or over `max` bytes, declared or sent. */
export async function receiveDocument(body: ReadableStream<Uint8Array> | null, declaredLength: number | null, max: number, what: string): Promise<string> {
  checkDeclaredLength(declaredLength, max);
  if (!body) throw new Refusal("bad-request", `empty ${what} upload`);
  try {
    return await readLimited(body, max);
  } catch (err) {
    if (err instanceof TooLargeError) throw new Refusal("too-large", `${what} exceeds ${max} bytes`);
    throw err;
  }
}

export class Uploads {
  private logFetches = 0;
  constructor(private readonly opts: UploadOptions) {}

  /** Stream a body to a temp file, hashing it; refuses more than `max` bytes. */
  private async receive(body: ReadableStream<Uint8Array>, max: number): Promise<{ path: string; size: number; sha256: string }> {
    const path = join(this.opts.tempDir, tempFileName("upload"));
    const fd = await open(path, "wx");
    const hasher = new Bun.CryptoHasher("sha256");
    let size = 0;
    try {
      for await (const chunk of body) {
        size += chunk.length;
        if (size > max) throw new Refusal("too-large", `body exceeds the limit of ${max} bytes`);
        hasher.update(chunk);
        await writeAll(fd, chunk);
      }
      await fd.close();
      return { path, size, sha256: `sha256:${encodeNix32(hasher.digest())}` };
    } catch (err) {
      await fd.close().catch(() => {});
      await rm(path, { force: true });
      if (err instanceof Refusal) throw err;
      throw new Refusal("bad-request", `reading the body failed: ${(err as Error).message}`);
    }
  }

  /** PUT /nar/<hash>.nar[.ext]: the URL names the FileHash, which the body must match. Stored
   * now, recorded when the narinfo naming it arrives and verifies. */
  async putNar(req: NcpsNarRequest, body: ReadableStream<Uint8Array> | null, declaredLength: number | null): Promise<WriteResult> {
    checkDeclaredLength(declaredLength, this.opts.maxUploadBytes);
    if (!body) throw new Refusal("bad-request", "empty NAR upload");
    const unverifiable = unverifiableCompression(req.compression, this.opts.acceptUnverifiedCompression);
    if (unverifiable) {
      await body.cancel().catch(() => {});
      throw new Refusal("bad-request", unverifiable);
    }
    if ((await this.opts.nars.storedSize(req.key)) !== null) {
      await body.cancel().catch(() => {});
      return "unchanged"; // the key is the content hash: same key, same bytes
    }
    const received = await this.receive(body, this.opts.maxUploadBytes);
    try {
      if (received.sha256 !== `sha256:${req.hashPart}`) {
        throw new Refusal("bad-request", `NAR body hashes to ${received.sha256}, but its URL names sha256:${req.hashPart}`);
      }
      await this.opts.nars.stageFile(req.key, received.path);
    } finally {
      await rm(received.path, { force: true });
    }
    this.opts.logger.info("NAR uploaded", { key: req.key, size: received.size });
    return "created";
  }

  /** PUT /<hash>.narinfo: validated, its NAR verified, re-signed, recorded. */
  async putNarInfo(hash: string, body: ReadableStream<Uint8Array> | null, declaredLength: number | null): Promise<WriteResult> {
    const text = await receiveDocument(body, declaredLength, MAX_NARINFO_BYTES, "narinfo");
    const narinfo = asBadRequest(() => parseNarInfo(text));
    const nar = asBadRequest(() => parseNcpsNarRequest(narinfo.url));
    // One narinfo per NAR at a time (across replicas with Redis): a refused one removing the
    // NAR must not pull it from under one being verified and recorded (that one got a 500).
    return this.opts.locker.withLock(`upload:${nar.key}`, async () => {
      try {
        return await this.acceptNarInfo(hash, narinfo, nar);
      } catch (err) {
        // Whatever the reason (refusal, lost race, fault), the NAR uploaded for this narinfo
        // goes with it, unless a recorded NAR or narinfo holds it.
        await this.opts.nars.discardUnrecorded(nar.key).catch((cleanup) => {
          this.opts.logger.warn("could not remove the NAR of a refused narinfo; fsck removes it", { key: nar.key, err: cleanup });
        });
        throw err;
      }
    });
  }

  private async acceptNarInfo(hash: string, narinfo: NarInfo, nar: NcpsNarRequest): Promise<WriteResult> {
    const { hashPart, baseName } = asBadRequest(() => parseStorePath(narinfo.storePath));
    if (hashPart !== hash) throw new Refusal("bad-request", `narinfo is for ${narinfo.storePath}, not ${hash}`);
    const compression = asBadRequest(() => parseCompression(narinfo.compression));
    if (compression !== nar.compression) {
      throw new Refusal("bad-request", `Compression ${compression} does not match the URL ${narinfo.url}`);
    }
    const unverifiable = unverifiableCompression(compression, this.opts.acceptUnverifiedCompression);
    // an unverifiable NAR may have been stored before the option was turned off
    if (unverifiable) throw new Refusal("bad-request", unverifiable);
    // the NAR came first and could not be judged then
    if (this.opts.trustedUploadKeys && !verifyNarInfo(narinfo, this.opts.trustedUploadKeys)) {
      throw new Refusal("forbidden", "narinfo carries no valid signature by a trusted upload key");
    }
    if (narinfo.fileHash !== undefined && asBadRequest(() => canonicalHash(narinfo.fileHash!)) !== `sha256:${nar.hashPart}`) {
      throw new Refusal("bad-request", `FileHash ${narinfo.fileHash} does not match the URL ${narinfo.url}`);
    }
    const storedSize = await this.opts.nars.storedSize(nar.key);
    if (storedSize === null) throw new Refusal("bad-request", `${nar.key} has not been uploaded: PUT the NAR first`);
    // An uncompressed NAR may be stored compressed already (another narinfo named it): its
    // FileSize is its NarSize, which verification checks.
    if (narinfo.fileSize !== undefined && compression !== "none" && narinfo.fileSize !== storedSize) {
      throw new Refusal("bad-request", `FileSize ${narinfo.fileSize} does not match the stored NAR (${storedSize} bytes)`);
    }
    const existing = await this.opts.db.getNarInfo(hash);
    const signingKey = this.opts.signNarInfo ? this.opts.signingKey : null;
    const record = narInfoRecord(hash, narinfo, { key: nar.key, compression }, { upstream: null, upstreamNarUrl: null }, signingKey);
    if (existing) return this.sameOrConflict(existing, record);
    await this.checkReferences(narinfo, baseName);

    let digest;
    try {
      digest = await this.opts.nars.verifyStaged(nar.key, {
        compression,
        fileSize: storedSize,
        fileHash: `sha256:${nar.hashPart}`,
        narSize: narinfo.narSize,
        narHash: narinfo.narHash,
      });
    } catch (err) {
      if (!(err instanceof NarVerifyError)) throw err;
      throw new Refusal("bad-request", `stored NAR does not match the narinfo: ${err.reason}`);
    }
    // The NAR is recorded before the narinfo naming it, so no moment (and no crash) leaves a
    // narinfo whose NAR is unrecorded; a lost race for the narinfo undoes the NAR record.
    const recordedBefore = (await this.opts.nars.find(nar.key)) !== null;
    if (!recordedBefore) {
      await this.opts.nars.record(nar.key, digest);
    }
    if (!(await this.opts.db.insertNarInfoIfAbsent(record))) {
      if (!recordedBefore) await this.opts.nars.removeIfUnnamed(nar.key);
      return this.sameOrConflict((await this.opts.db.getNarInfo(hash))!, record);
    }
    this.opts.logger.info("narinfo uploaded", { hash, storePath: narinfo.storePath });
    return "created";
  }

  private sameOrConflict(existing: NarInfoRecord, record: NarInfoRecord): WriteResult {
    if (existing.text === record.text) return "unchanged";
    throw new Refusal("conflict", `ncps already holds a different narinfo for ${existing.storePath}`);
  }

  /** Every reference must be servable: held here, available upstream, or the path itself.
   * Each distinct reference is checked once, and the upstream work one upload can cause is
   * bounded (see the constants below). */
  private async checkReferences(narinfo: NarInfo, self: string) {
    const distinct = new Set(narinfo.references ?? []);
    distinct.delete(self);
    const notHeld: { reference: string; hashPart: string }[] = [];
    for (const reference of distinct) {
      const { hashPart } = asBadRequest(() => parseStorePathBaseName(reference));
      if ((await this.opts.db.getNarInfoText(hashPart)) === null) notHeld.push({ reference, hashPart });
    }
    if (notHeld.length > MAX_UPSTREAM_REFERENCE_CHECKS) {
      throw new Refusal(
        "bad-request",
        `${notHeld.length} references are not in ncps, more than the ${MAX_UPSTREAM_REFERENCE_CHECKS} one upload may have looked up upstream: upload them first`,
      );
    }
    let next = 0;
    let missing: string | null = null;
    const worker = async () => {
      while (missing === null && next < notHeld.length) {
        const { reference, hashPart } = notHeld[next++]!;
        if ((await this.opts.pool.lookupNarInfo(hashPart)) === null) missing ??= reference;
      }
    };
    await Promise.all(Array.from({ length: Math.min(REFERENCE_LOOKUP_CONCURRENCY, notHeld.length) }, worker));
    if (missing !== null) throw new Refusal("bad-request", `reference ${missing} is neither in ncps nor in an upstream: upload it first`);
  }

  /** DELETE /<hash>.narinfo: the record, and its NAR when no other narinfo names it. */
  async deleteNarInfo(hash: string): Promise<boolean> {
    if (!(await this.opts.nars.removeNarInfo(hash))) return false;
    this.opts.pool.forgetMiss(hash);
    this.opts.logger.info("narinfo deleted", { hash });
    return true;
  }

  /** DELETE /nar/...: the bytes, the record, and every narinfo naming it. */
  async deleteNar(key: string): Promise<boolean> {
    const removed = await this.opts.nars.remove(key);
    const any = removed.nar || removed.narInfos.length > 0;
    if (any) this.opts.logger.info("NAR deleted", { key, narinfos: removed.narInfos.length });
    return any;
  }

  /** PUT /log/<drv>: a build log, kept as sent. */
  async putLog(drv: string, body: ReadableStream<Uint8Array> | null, declaredLength: number | null): Promise<WriteResult> {
    const key = logKey(drv);
    checkDeclaredLength(declaredLength, this.opts.maxUploadBytes);
    // A build that printed nothing has an empty log: Bun gives no body for Content-Length: 0.
    const received = await this.receive(body ?? new Blob([]).stream(), this.opts.maxUploadBytes);
    try {
      await this.opts.store.putFile(key, received.path);
    } finally {
      await rm(received.path, { force: true });
    }
    return "created";
  }

  /** GET /log/<drv>: the stored log, else (with `upstream`, the default) the first
   * upstream's, read whole within the upstream's deadline; UpstreamsFailed when none has it
   * and one failed to answer. `signal` (the client's) ends the upstream request. With
   * `head`, an upstream is only asked whether it has it (HEAD): no body, stored or fetched,
   * is read. */
  async getLog(drv: string, { upstream: askUpstreams = true, signal, head = false }: { upstream?: boolean; signal?: AbortSignal; head?: boolean } = {}): Promise<LogBody | null> {
    const key = logKey(drv);
    const stored = await this.opts.store.get(key);
    if (stored || !askUpstreams) return stored;
    if (this.logFetches >= LOG_FETCHES_AT_ONCE) throw new Busy(`${key}: ${this.logFetches} build logs are being fetched from upstreams already`);
    this.logFetches++;
    try {
      const failures: string[] = [];
      for (const upstream of this.opts.pool.upstreams) {
        const lookup = head ? await upstream.headLog(key, signal) : await upstream.fetchLog(key, signal);
        if (signal?.aborted) return null; // the client went away: nobody to answer, no upstream at fault
        if (lookup.kind === "found") {
          const { value } = lookup;
          return value instanceof Uint8Array ? { body: new Blob([value]), length: value.length } : { body: null, length: value };
        }
        if (lookup.kind === "error") failures.push(`${upstream.url}: ${lookup.detail ?? lookup.reason}`);
      }
      if (failures.length > 0) throw new UpstreamsFailed(`${key}: no upstream answered: ${failures.join("; ")}`);
      return null;
    } finally {
      this.logFetches--;
    }
  }
}

export interface LogBody {
  /** null: an upstream's answer to HEAD */
  body: Blob | ReadableStream<Uint8Array> | null;
  length: number | null;
}

export function logKey(drv: string): string {
  if (!drv.endsWith(".drv")) throw new Refusal("bad-request", "a build log is named by its derivation: <hash>-<name>.drv");
  asBadRequest(() => parseStorePathBaseName(drv));
  return `log/${drv}`;
}
