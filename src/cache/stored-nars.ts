/** A stored NAR is two things that must agree: its bytes in the BlobStore and its record in
 * the database. This module is the only code that writes, opens or removes that pair, so the
 * rules live in one place: a NAR is recorded only once its bytes are stored and verified, a
 * record whose bytes are gone is forgotten, and removing a NAR also removes every narinfo
 * that names it (which would otherwise point at nothing) and their in-memory copies.
 * Uploads, downloads, DELETE, eviction and fsck all go through here. */
import type { MetadataStore, NarInfoRecord, NarRecord } from "../db/metadata-store.ts";
import type { NarDigest, NarExpectation } from "../nix/nar-verifier.ts";
import type { BlobBody, BlobStore, ByteRange } from "../storage/blob-store.ts";
import type { Logger } from "../telemetry/logger.ts";
import { Refusal } from "./errors.ts";
import type { HotNarInfos } from "./hot-narinfos.ts";
import { verifyStoredNar } from "./verify-stored.ts";

export interface StoredNarsOptions {
  db: MetadataStore;
  store: BlobStore;
  /** narinfos served recently: a removed narinfo must leave it */
  hot: HotNarInfos;
  logger: Logger;
}

export interface Removed {
  /** the NAR's bytes or record were there */
  nar: boolean;
  /** narinfos that named it and were removed with it */
  narInfos: string[];
}

export class StoredNars {
  private afterRecord: ((key: string) => void) | null = null;

  constructor(private readonly opts: StoredNarsOptions) {}

  /** Called after each NAR is recorded (eviction: a commit that passes the size cap starts a
   * pass at once). It must not throw. */
  onRecorded(fn: ((key: string) => void) | null): void {
    this.afterRecord = fn;
  }

  /** The record of a stored, verified NAR. */
  find(key: string): Promise<NarRecord | null> {
    return this.opts.db.getNar(key);
  }

  /** Move a verified temp file into storage, then record it (never the other way round: a
   * crash in between leaves bytes without a record, which fsck removes, never a record
   * without bytes). The temp file is consumed. */
  async commitFile(key: string, tempPath: string, digest: NarDigest): Promise<void> {
    await this.opts.store.putFile(key, tempPath);
    await this.record(key, digest);
  }

  /** Store an uploaded NAR's bytes without recording them: it is recorded once a narinfo
   * naming it arrives and the bytes verify against it (`verifyStaged`, then `record`). */
  stageFile(key: string, tempPath: string): Promise<void> {
    return this.opts.store.putFile(key, tempPath);
  }

  /** Size of stored bytes, recorded or only staged; null when there are none. */
  async storedSize(key: string): Promise<number | null> {
    return (await this.opts.store.stat(key))?.size ?? null;
  }

  /** Read the stored bytes through the NAR verifier. */
  verifyStaged(key: string, expect: NarExpectation): Promise<NarDigest> {
    return verifyStoredNar(this.opts.store, key, expect);
  }

  /** Record stored bytes that were verified. */
  async record(key: string, digest: NarDigest): Promise<void> {
    await this.opts.db.putNar({ key, size: digest.fileSize, fileHash: digest.fileHash, narHash: digest.narHash, createdAt: Date.now() });
    this.afterRecord?.(key);
  }

  /** The NAR's bytes, or a range of them. A recorded NAR whose bytes are gone (removed
   * meanwhile, or lost from storage) is forgotten, so the next request fetches it again. */
  async open(key: string, range?: ByteRange): Promise<BlobBody> {
    const body = await this.opts.store.get(key, range);
    if (body) return body;
    this.opts.logger.warn("NAR recorded but missing from storage; forgetting it", { key });
    await this.opts.db.deleteNar(key);
    throw new Refusal("not-found", `${key} is not in storage`);
  }

  /** The one removal rule: the NAR's record and bytes, and every narinfo naming it. */
  async remove(key: string): Promise<Removed> {
    const named = await this.opts.db.narInfosForNar(key);
    for (const n of named) await this.forgetNarInfo(n.hash);
    const recorded = await this.opts.db.deleteNar(key);
    const stored = await this.opts.store.delete(key);
    return { nar: recorded || stored, narInfos: named.map((n) => n.hash) };
  }

  /** Remove one narinfo, and its NAR when no other narinfo names it. False when there was none. */
  async removeNarInfo(hash: string): Promise<boolean> {
    const record = await this.opts.db.getNarInfo(hash);
    if (!record) return false;
    await this.forgetNarInfo(hash);
    await this.removeIfUnnamed(record.narKey);
    return true;
  }

  /** Eviction's removal, for a batch in a few statements: the narinfos, and the records of
   * their NARs (`narKey`, as listed) that no narinfo names any more, which are returned. Their
   * bytes stay, for the caller to delete once readers that already opened them are done
   * (`discardUnrecorded`, which keeps them if the NAR was recorded again meanwhile); no new
   * reader finds them, since readers start from the record. */
  async removeNarInfosKeepingBytes(narInfos: { hash: string; narKey: string }[]): Promise<{ narInfos: number; nars: NarRecord[] }> {
    const { db, hot } = this.opts;
    const removed = await db.deleteNarInfos(narInfos.map((n) => n.hash));
    for (const n of narInfos) hot.forget(n.hash);
    const keys = [...new Set(narInfos.map((n) => n.narKey))];
    const named = await db.namedNarKeys(keys);
    return { narInfos: removed, nars: await db.deleteNars(keys.filter((k) => !named.has(k))) };
  }

  /** Remove a NAR (bytes and record) that no recorded narinfo names: an upload whose narinfo
   * was refused or lost its race. */
  async removeIfUnnamed(key: string): Promise<void> {
    if ((await this.opts.db.narInfosForNar(key)).length > 0) return;
    await this.opts.db.deleteNar(key);
    await this.opts.store.delete(key);
  }

  /** Remove staged bytes that were never recorded and that no narinfo names. */
  async discardUnrecorded(key: string): Promise<void> {
    if ((await this.opts.db.getNar(key)) !== null) return;
    await this.removeIfUnnamed(key);
  }

  /** Forget a NAR whose stored bytes cannot be served (missing, corrupt, or never recorded):
   * its record and bytes go, so the next request fetches it again. Narinfos naming it stay
   * when `refetchable` says their NAR can be fetched again (their upstream is configured);
   * the others go, as they would name nothing. */
  async forget(key: string, refetchable: (n: NarInfoRecord) => boolean): Promise<Removed> {
    const gone = (await this.opts.db.narInfosForNar(key)).filter((n) => !refetchable(n));
    for (const n of gone) await this.forgetNarInfo(n.hash);
    const recorded = await this.opts.db.deleteNar(key);
    const stored = await this.opts.store.delete(key);
    return { nar: recorded || stored, narInfos: gone.map((n) => n.hash) };
  }

  /** A narinfo record and its in-memory copy; the NAR it names is left as it is. */
  async forgetNarInfo(hash: string): Promise<void> {
    await this.opts.db.deleteNarInfo(hash);
    this.opts.hot.forget(hash);
  }
}
