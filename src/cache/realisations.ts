/** Realisations of content-addressed derivations (nix/realisation.ts): served from the
 * database, fetched from the upstreams on a miss like narinfos, accepted from `nix copy --to`
 * and the Go ncps's build-trace-v2 PUT. Every one recorded is re-rendered and signed with
 * ncps's key (when narinfos are), so what is served is ncps's word, not the sender's bytes.
 *
 * A realisation goes with its output path: removing the narinfo of that path (DELETE,
 * eviction, fsck) removes it in the same transaction (MetadataStore.deleteNarInfo), so ncps
 * never points Nix at an output it no longer serves. One fetched from an upstream before its
 * output's narinfo is fetched again once removed. */
import type { MetadataStore, RealisationRecord } from "../db/metadata-store.ts";
import {
  drvOutputId,
  MAX_REALISATION_BYTES,
  outStorePath,
  parseRealisation,
  realisationFingerprint,
  renderRealisation,
  signRealisation,
  trustedRealisationSignatures,
  type DrvOutput,
  type Realisation,
} from "../nix/realisation.ts";
import type { PublicKey, SecretKey } from "../nix/signature.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { UpstreamPool } from "../upstream/pool.ts";
import { asBadRequest, Refusal } from "./errors.ts";
import { receiveDocument, type WriteResult } from "./uploads.ts";

export interface RealisationsOptions {
  db: MetadataStore;
  pool: UpstreamPool;
  signingKey: SecretKey;
  /** sign with signingKey (--cache-sign-narinfo, which covers realisations too) */
  sign: boolean;
  /** When set, an uploaded realisation must carry a valid signature by one of these
   * (--cache-require-trusted-signature, as for narinfos). */
  trustedUploadKeys: PublicKey[] | null;
  logger: Logger;
}

export class Realisations {
  constructor(private readonly opts: RealisationsOptions) {}

  /** The document to serve for `id`, or null when no one has it. `upstream: false` answers
   * from what ncps holds only (the /upload/ prefix). */
  async get(id: DrvOutput, { upstream = true }: { upstream?: boolean } = {}): Promise<string | null> {
    const held = await this.opts.db.getRealisation(drvOutputId(id));
    if (held || !upstream) return held?.text ?? null;
    const found = await this.opts.pool.lookupRealisation(id);
    if (!found) return null;
    const record = this.record(found.value, found.upstream.url);
    if (!(await this.opts.db.insertRealisationIfAbsent(record))) {
      return (await this.opts.db.getRealisation(record.id))?.text ?? null; // another request or replica got there first
    }
    this.opts.logger.info("realisation cached", { id: record.id, upstream: found.upstream.url, outPath: outStorePath(found.value) });
    return record.text;
  }

  /** PUT of a realisation (`nix copy --to`) or a build trace (the Go ncps's shape, or
   * Nix's): validated against the path's `id`, its output path servable, re-signed,
   * recorded. The same realisation again is "unchanged"; another output path for the same
   * derivation output is a conflict (the first one recorded stays). */
  async put(id: DrvOutput, body: ReadableStream<Uint8Array> | null, declaredLength: number | null): Promise<WriteResult> {
    const text = await receiveDocument(body, declaredLength, MAX_REALISATION_BYTES, "realisation");
    const realisation = asBadRequest(() => parseRealisation(text, id));
    const { trustedUploadKeys } = this.opts;
    if (trustedUploadKeys && trustedRealisationSignatures(realisation, trustedUploadKeys).length === 0) {
      throw new Refusal("forbidden", "realisation carries no valid signature by a trusted upload key");
    }
    const record = this.record(realisation, null);
    const existing = await this.opts.db.getRealisation(record.id);
    if (existing) return this.sameOrConflict(existing, realisation);
    await this.checkOutputServable(realisation);
    if (!(await this.opts.db.insertRealisationIfAbsent(record))) {
      return this.sameOrConflict((await this.opts.db.getRealisation(record.id))!, realisation);
    }
    this.opts.logger.info("realisation uploaded", { id: record.id, outPath: outStorePath(realisation) });
    return "created";
  }

  /** Nix uploads a realisation after its output path: ncps must be able to serve that path,
   * from what it holds or from an upstream, or the realisation would send Nix nowhere. */
  private async checkOutputServable(r: Realisation) {
    const hash = r.outPath.slice(0, 32);
    if ((await this.opts.db.getNarInfoText(hash)) !== null) return;
    if ((await this.opts.pool.lookupNarInfo(hash)) !== null) return;
    throw new Refusal("bad-request", `output ${outStorePath(r)} is neither in ncps nor in an upstream: upload it first`);
  }

  private sameOrConflict(existing: RealisationRecord, r: Realisation): WriteResult {
    const held = parseRealisation(existing.text, r.id);
    if (realisationFingerprint(held) === realisationFingerprint(r)) return "unchanged";
    throw new Refusal("conflict", `ncps already holds another realisation of ${existing.id} (${outStorePath(held)})`);
  }

  private record(r: Realisation, upstream: string | null): RealisationRecord {
    const served = this.opts.sign ? signRealisation(r, this.opts.signingKey) : r;
    return { id: drvOutputId(r.id), outPath: r.outPath, text: renderRealisation(served), upstream, createdAt: Date.now() };
  }
}
