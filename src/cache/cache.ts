/** The cache domain: narinfo and NAR lookups, the upstream miss paths, ingest and signing.
 * Knows nothing about HTTP frameworks; src/server turns its answers into responses. */
import { join } from "node:path";
import type { MetadataStore, NarInfoRecord, NarRecord } from "../db/metadata-store.ts";
import type { Broadcast } from "../lock/broadcast.ts";
import type { Locker } from "../lock/locker.ts";
import { serializeCacheInfo } from "../nix/cache-info.ts";
import { canDecompress, decompressStream, parseCompression, type Compression } from "../nix/compression.ts";
import { ncpsNarKey, type NcpsNarRequest } from "../nix/nar-url.ts";
import { declaredFileSize, type NarDigest } from "../nix/nar-verifier.ts";
import type { NarInfo } from "../nix/narinfo.ts";
import { formatPublicKey, toPublicKey, type SecretKey } from "../nix/signature.ts";
import type { BlobBody, BlobStore, ByteRange } from "../storage/blob-store.ts";
import { inSpan, noInstruments, upstreamHostname, type Instruments, type SpanHandle } from "../telemetry/instruments.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { UpstreamPool } from "../upstream/pool.ts";
import type { Upstream } from "../upstream/upstream.ts";
import { withoutCredentials } from "../upstream/upstream-url.ts";
import { AccessTimes } from "./access-times.ts";
import { Refusal } from "./errors.ts";
import type { HotNarInfos } from "./hot-narinfos.ts";
import { defaultDownloadLimits, NarDownload, NarDownloadError, type DownloadLimits, type DownloadSource } from "./nar-download.ts";
import type { VerifiedNar } from "./verification.ts";
import { narInfoRecord } from "./narinfo-record.ts";
import type { ReplicaPeers } from "./replica-peers.ts";
import { SingleFlight } from "../single-flight.ts";
import { sliceStream } from "../streams.ts";
import { storedAsZstd, uncompressedKey, type StoredNars } from "./stored-nars.ts";
import type { ChunkSizes } from "./chunker.ts";
import { canonicalHash } from "../nix/hash.ts";
import { tempFileName } from "./temp-files.ts";

export interface CacheOptions {
  db: MetadataStore;
  /** stored NARs: found, opened and committed through it */
  nars: StoredNars;
  pool: UpstreamPool;
  signingKey: SecretKey;
  /** sign narinfos with signingKey (on by default) */
  signNarInfo: boolean;
  /** where in-flight downloads are written */
  tempDir: string;
  /** nix-cache-info Priority */
  priority: number;
  /** narinfos served recently, shared with Uploads (which forgets deleted ones) */
  hot: HotNarInfos;
  /** Who downloads a NAR: the holder of this lock. In-process (MemoryLocker) for one
   * instance; across replicas sharing database and storage (Redis), so one of them downloads
   * while the others stream it from that one (with `peers`) or wait for it to be recorded. */
  downloadLock: { locker: Locker; ttlMs: number };
  /** Replicas streaming in-flight NARs from each other (replica-peers.ts); none for one instance. */
  peers?: ReplicaPeers;
  /** What replicas tell each other (Redis pub/sub): here, to write held access times before
   * an eviction pass; none for one instance. */
  broadcast?: Broadcast;
  /** when an upstream NAR download is given up (stalled, too slow) */
  downloadLimits?: DownloadLimits;
  logger: Logger;
  /** metrics and spans (telemetry/instruments.ts); none by default */
  instruments?: Instruments;
  /** Content-defined chunking: `enabled`, new narinfos name an uncompressed NAR, stored as
   * chunks of `sizes`. Off, NARs whose narinfos were written so are still chunked (with the
   * sizes recorded at first use). */
  chunking?: { enabled: boolean; sizes: ChunkSizes };
}

/** A NAR ready to be served: `open` reads it (or a range of it). `size` is null only for a
 * download in flight whose length the narinfo does not declare. */
export interface NarSource {
  size: number | null;
  /** from storage (hit) or from a download (miss), and the upstream of a download */
  served?: "hit" | "miss";
  upstream?: string;
  open(range?: ByteRange): Promise<BlobBody | { body: ReadableStream<Uint8Array>; length: number | null; size: number | null }>;
  /** An uncompressed NAR stored zstd-compressed: `open` decompresses it, this gives the stored
   * bytes as they are, for a client that accepts Content-Encoding: zstd. `size` above is then
   * null: the NAR's own size (`narSize`) costs a lookup that only a HEAD or a Range needs, not
   * a client taking the stored bytes (as Nix does) nor one taking the whole NAR decompressed. */
  zstd?: { size: number; open(): Promise<BlobBody>; narSize(): Promise<number | null> };
}

/** How often a replica waiting on another's download looks for the recorded NAR (or tries
 * again to stream it from that replica). */
const REPLICA_POLL_MS = 250;
const MAX_RELAY_BACKOFF_MS = 4_000;

/** A verification failure as a metric label: a fixed word, never the hashes. */
function verificationReason(message: string): string {
  const m = /(FileHash|NarHash|FileSize|NarSize) (mismatch|exceeded)/.exec(message);
  if (m) return `${m[1]!.toLowerCase().replace("hash", "_hash").replace("size", "_size")}_${m[2]}`;
  if (/corrupt|truncated|trailing|decompressor/.test(message)) return "corrupt_compression";
  return "other";
}

export class Cache {
  private readonly downloads = new Map<string, NarDownload>();
  /** Downloads that stream a NAR from the replica holding its claim, not from an upstream. */
  private readonly relays = new WeakSet<NarDownload>();
  /** Claims whose holder note did not check out, already logged (once per NAR). */
  private readonly unverifiedClaims = new Set<string>();
  private readonly downloadUpstreams = new WeakMap<NarDownload, string>();
  /** Downloads whose narinfo names the NAR uncompressed while the upstream sends it compressed. */
  private readonly decompressedDownloads = new WeakMap<NarDownload, { compression: Compression; narSize: number }>();
  /** Whether a download's upstream answered; when not, once its narinfos are forgotten. */
  private readonly downloadReady = new WeakMap<NarDownload, Promise<boolean>>();
  private readonly instruments: Instruments;
  /** What runs after a download ends (replacing a narinfo that lied); drain() waits for it. */
  private readonly aftermath = new Set<Promise<void>>();
  private readonly narInfoMisses = new SingleFlight<string, { text: string; upstream: string } | null>();
  private readonly claims = new SingleFlight<string, NarSource | null>();
  private readonly accessTimes: AccessTimes;
  readonly publicKey: string;
  readonly cacheInfo: string;

  constructor(private readonly opts: CacheOptions) {
    this.accessTimes = new AccessTimes(opts.db, opts.logger);
    if (opts.broadcast) this.accessTimes.shareThrough(opts.broadcast);
    this.instruments = opts.instruments ?? noInstruments;
    this.publicKey = formatPublicKey(toPublicKey(opts.signingKey));
    this.cacheInfo = serializeCacheInfo({ storeDir: "/nix/store", wantMassQuery: true, priority: opts.priority, extra: [] });
  }

  /** The narinfo, encoded, for a store path hash part (already validated), or null when no
   * one has it. `upstream: false` answers from what ncps holds only (the /upload/ prefix). */
  async narInfo(hash: string, opts: { upstream?: boolean } = {}): Promise<Uint8Array | null> {
    let body = this.opts.hot.get(hash);
    if (body === null) {
      let text = await this.opts.db.getNarInfoText(hash);
      if (text === null) {
        if (opts.upstream === false) return null;
        const fetched = await this.narInfoMisses.run(hash, () => this.fetchNarInfo(hash));
        this.instruments.narInfoServed("miss", fetched ? "success" : "error", fetched?.upstream);
        if (!fetched) return null;
        text = fetched.text;
      } else {
        this.instruments.narInfoServed("hit", "success");
      }
      body = Buffer.from(text);
      this.opts.hot.set(hash, body);
    } else {
      this.instruments.narInfoServed("hit", "success");
    }
    this.accessTimes.record(hash);
    return body;
  }

  /** The narinfo from the upstreams, recorded, and the hostname of the upstream that had it. */
  private fetchNarInfo(hash: string): Promise<{ text: string; upstream: string } | null> {
    return inSpan(this.instruments, "ncps.narinfo.lookup", { "ncps.narinfo.hash": hash }, async (span) => {
      const found = await this.opts.pool.lookupNarInfo(hash);
      span.setAttributes({ "ncps.narinfo.found": found !== null });
      if (!found) return null;
      const upstream = upstreamHostname(found.upstream.url);
      const record = this.servedRecord(hash, found.upstream, found.narinfo);
      if (!(await this.opts.db.insertNarInfoIfAbsent(record))) {
        const text = await this.opts.db.getNarInfoText(hash); // another replica got there first: serve its copy
        return text === null ? null : { text, upstream };
      }
      this.opts.logger.info("narinfo cached", { hash, upstream: found.upstream.url, storePath: record.storePath });
      return { text: record.text, upstream };
    });
  }

  /** Rewrite an upstream narinfo into the one ncps serves: our NAR URL, our signature. */
  private servedRecord(hash: string, upstream: Upstream, upstreamNarInfo: NarInfo): NarInfoRecord {
    const compression = parseCompression(upstreamNarInfo.compression);
    const origin = { upstream: upstream.url, upstreamNarUrl: upstream.resolve(upstreamNarInfo.url) };
    const signingKey = this.opts.signNarInfo ? this.opts.signingKey : null;
    if (this.opts.chunking?.enabled && canDecompress(compression)) {
      // Chunked NARs are served uncompressed (or as zstd frames by Content-Encoding), so the
      // narinfo says so from the start: no client ever holds one naming the upstream's xz.
      // The record keeps how the upstream serves the NAR, which is what the download checks.
      const served = narInfoRecord(hash, upstreamNarInfo, { key: ncpsNarKey(upstreamNarInfo.narHash, "none"), compression: "none" }, origin, signingKey);
      return {
        ...served,
        compression,
        fileHash: upstreamNarInfo.fileHash ? canonicalHash(upstreamNarInfo.fileHash) : null,
        fileSize: upstreamNarInfo.fileSize ?? null,
      };
    }
    const key = ncpsNarKey(upstreamNarInfo.fileHash ?? upstreamNarInfo.narHash, compression);
    return narInfoRecord(hash, upstreamNarInfo, { key, compression }, origin, signingKey);
  }

  /** The NAR of this record is stored as chunks: every NAR while chunking is enabled, and
   * those whose narinfo names an uncompressed NAR that the upstream serves compressed
   * (written while it was). */
  private chunksNar(record: NarInfoRecord): boolean {
    return this.opts.chunking !== undefined && (this.opts.chunking.enabled || servedDecompressed(record));
  }

  /** A NAR by our key: stored, being downloaded, or fetchable because a narinfo names it.
   * `startDownload` false (HEAD) never starts a download; `upstream: false` considers stored
   * NARs only. Null when none of these. */
  async nar(req: NcpsNarRequest, opts: { startDownload: boolean; upstream?: boolean }): Promise<NarSource | null> {
    const source = await this.findNar(req, opts);
    // a HEAD is a question, not a NAR served
    if (opts.startDownload) this.instruments.narServed(source?.served ?? "miss", source ? "success" : "error", source?.upstream);
    return source;
  }

  private async findNar(req: NcpsNarRequest, opts: { startDownload: boolean; upstream?: boolean }): Promise<NarSource | null> {
    const { db } = this.opts;
    // In-flight first: a download records its NAR before it leaves this map, so checking in
    // this order leaves no moment where a finished download is found in neither place.
    const inFlight = opts.upstream === false ? undefined : this.downloads.get(req.key);
    if (inFlight && !inFlight.failed) return this.downloadSource(inFlight, opts.startDownload);
    // The record holds the verified size: a hit needs no stat before the read.
    const stored = await this.opts.nars.find(req.key);
    if (stored) return this.storedSource(stored);
    if (opts.upstream === false) return null;

    const named = await db.narInfosForNar(req.key);
    const record = named.find((r) => r.upstreamNarUrl !== null && this.opts.pool.upstreams.some((u) => u.is(r.upstream)));
    if (!record) return null;
    if (!opts.startDownload) {
      const size = servedDecompressed(record) ? record.narSize : declaredFileSize({ ...record, compression: parseCompression(record.compression) });
      return { size, open: () => Promise.reject(new Error("HEAD source cannot be opened")) };
    }
    return this.claims.run(record.narKey, () => this.claimDownload(record));
  }

  private async storedSource(stored: NarRecord): Promise<NarSource | null> {
    const { nars } = this.opts;
    if (stored.chunked) {
      const chunked = await nars.openChunked(stored.key);
      if (!chunked) return null;
      const size = chunked.narSize;
      return {
        size,
        served: "hit",
        open: async (range) => ({ body: chunked.open(range), length: range ? range.end - range.start + 1 : size, size }),
        zstd: { size: chunked.storedSize, open: async () => ({ body: chunked.openFrames(), length: chunked.storedSize, size: chunked.storedSize }), narSize: async () => size },
      };
    }
    if (!storedAsZstd(stored)) return { size: stored.size, served: "hit", open: (range) => nars.open(stored.key, range) };
    let narSize: Promise<number | null> | undefined;
    const sizeOfNar = () => (narSize ??= this.opts.db.narInfosForNar(stored.key).then((named) => named[0]?.narSize ?? null));
    return {
      size: null,
      served: "hit",
      // Whole, its length is not asked for: sent decompressed as it streams, it goes chunked
      // (Bun.serve drops a Content-Length on a transformed stream), so the lookup would buy nothing.
      open: async (range) => {
        const body = await nars.openDecompressed(stored.key, range);
        return range ? { body, length: range.end - range.start + 1, size: await sizeOfNar() } : { body, length: null, size: null };
      },
      zstd: { size: stored.size, open: () => nars.open(stored.key), narSize: sizeOfNar },
    };
  }

  /** Start the download here, or, when another replica holds the claim on it, stream it from
   * that replica as it downloads (relay), or else wait until that replica has recorded the NAR
   * and serve the stored copy. A claim whose holder died expires after the lock TTL, and the
   * next waiter takes it over. There is no other deadline: a living holder's download ends by
   * its own limits (stalled, too slow), and its claim with it. */
  private async claimDownload(record: NarInfoRecord): Promise<NarSource | null> {
    const running = this.downloads.get(record.narKey);
    if (running && !running.failed) return this.downloadSource(running, true);
    const { locker, ttlMs } = this.opts.downloadLock;
    const claim = `download:${record.narKey}`;
    // A holder that did not answer (dead until its claim lapses, or finishing) is asked again
    // less and less often: each failed attempt is a logged failed download.
    let relayAt = 0;
    let relayBackoff = REPLICA_POLL_MS;
    for (;;) {
      const release = await locker.tryLock(claim, ttlMs, this.opts.peers?.claimNote(record.narKey));
      if (release) {
        const stored = await this.opts.nars.find(record.narKey); // finished while we asked?
        if (stored) {
          await release();
          return this.storedSource(stored);
        }
        const download = this.startDownload(record);
        void download.done.finally(() => release().catch(() => {}));
        return this.downloadSource(download, true);
      }
      if (Date.now() >= relayAt) {
        const relayed = await this.relayFromHolder(record, claim);
        if (relayed) return relayed;
        relayAt = Date.now() + relayBackoff;
        relayBackoff = Math.min(relayBackoff * 2, MAX_RELAY_BACKOFF_MS);
      }
      await Bun.sleep(REPLICA_POLL_MS);
      const stored = await this.opts.nars.find(record.narKey);
      if (stored) return this.storedSource(stored);
    }
  }

  /** The NAR streamed from the replica whose claim names it, once that replica answers; null
   * (keep waiting) without peers, when the claim names no replica this one can trust, or when
   * the holder does not answer with the NAR (it died, or has just finished). */
  private async relayFromHolder(record: NarInfoRecord, claim: string): Promise<NarSource | null> {
    const { peers } = this.opts;
    if (!peers) return null;
    const note = await this.opts.downloadLock.locker.holderOf(claim);
    const holder = peers.holderUrl(record.narKey, note);
    if (holder === null) {
      if (note !== null && !note.startsWith(`${peers.advertiseUrl} `) && !this.unverifiedClaims.has(record.narKey)) {
        if (this.unverifiedClaims.size > 1000) this.unverifiedClaims.clear();
        this.unverifiedClaims.add(record.narKey);
        this.opts.logger.warn("download claim names a replica whose proof does not check out (a different signing key, or written by someone else): waiting for storage instead", { key: record.narKey });
      }
      return null;
    }
    const existing = this.downloads.get(record.narKey);
    const relay = existing && !existing.failed ? existing : this.startRelay(record, holder, peers);
    return this.downloadSource(relay, true);
  }

  /** A download from the holder's internal route: written to a temp file and read by clients
   * exactly as a download from an upstream (verified here too, last byte withheld until then),
   * and never committed: the holder records the NAR just after its verdict, and until it has
   * (or for a stall timeout at most) new clients here keep reading this copy. The holder
   * withholds its own last byte until it has verified, so a relay never ends before the
   * holder's verdict either. */
  private startRelay(record: NarInfoRecord, holder: string, peers: ReplicaPeers): NarDownload {
    const limits = this.opts.downloadLimits ?? defaultDownloadLimits;
    const source: DownloadSource = {
      url: holder,
      // The holder answers once its upstream has: a holder that never answers is given up
      // after the stall timeout, as a silent upstream would be. The download's own signal
      // (stalled, too slow) ends the request, body included: joined by AbortSignal.any, which
      // leaves no listener on it once the relay ends.
      fetch: async (_, signal) => {
        const answer = new AbortController();
        const timer = setTimeout(() => answer.abort(new NarDownloadError(`replica ${holder} did not answer within ${limits.stallTimeoutMs} ms`)), limits.stallTimeoutMs);
        try {
          return await peers.fetchFromHolder(holder, record.narKey, AbortSignal.any([signal, answer.signal]));
        } finally {
          clearTimeout(timer);
        }
      },
      expect: this.expectation(record),
    };
    const tempPath = join(this.opts.tempDir, tempFileName("relay", record.narKey));
    const recorded = async () => {
      const until = Date.now() + limits.stallTimeoutMs;
      while (Date.now() < until && !(await this.opts.nars.find(record.narKey))) await Bun.sleep(REPLICA_POLL_MS);
      if (this.downloads.get(record.narKey) === relay) this.downloads.delete(record.narKey);
    };
    const relay: NarDownload = new NarDownload(record.narKey, tempPath, source, recorded, this.opts.logger, limits);
    this.relays.add(relay);
    this.serveDecompressedIfNamedSo(relay, record);
    this.downloads.set(record.narKey, relay);
    void relay.done.finally(() => {
      if (this.downloads.get(record.narKey) === relay) this.downloads.delete(record.narKey);
      this.instruments.replicaRelay(relay.written, relay.failed ? "failed" : "verified");
      this.noteFailure(relay, `replica ${holder}`);
    });
    this.opts.logger.info("NAR streaming from the replica downloading it", { key: record.narKey, holder });
    return relay;
  }

  /** An upstream download running here, for another replica to stream (never a relay, never
   * storage: the asking replica reads storage itself). Null when there is none. */
  async downloadForReplica(req: NcpsNarRequest): Promise<NarSource | null> {
    const download = this.downloads.get(req.key);
    if (!download || download.failed || this.relays.has(download)) return null;
    return this.downloadSource(download, true, { asFetched: true });
  }

  /** A download whose narinfo names the NAR uncompressed while it arrives compressed is
   * served to clients decompressed. */
  private serveDecompressedIfNamedSo(download: NarDownload, record: NarInfoRecord): void {
    if (servedDecompressed(record)) this.decompressedDownloads.set(download, { compression: parseCompression(record.compression), narSize: record.narSize });
  }

  /** What the NAR a narinfo record names must turn out to be. */
  private expectation(record: NarInfoRecord): DownloadSource["expect"] {
    return {
      compression: parseCompression(record.compression),
      fileHash: record.fileHash,
      fileSize: record.fileSize,
      narHash: record.narHash,
      narSize: record.narSize,
    };
  }

  /** A download as a source, once its upstream has answered (a GET; a HEAD does not wait):
   * null when the upstream refused the NAR or did not answer, so the client gets a 404 rather
   * than a 200 and then a reset connection. */
  private async downloadSource(download: NarDownload, waitForUpstream: boolean, opts: { asFetched?: boolean } = {}): Promise<NarSource | null> {
    if (waitForUpstream && !(await (this.downloadReady.get(download) ?? download.started))) return null;
    // another replica relaying it verifies the bytes as the upstream sent them
    const decompressed = opts.asFetched ? undefined : this.decompressedDownloads.get(download);
    if (decompressed) {
      // its narinfo names the NAR uncompressed: clients get it decompressed as it arrives
      const { compression, narSize } = decompressed;
      return {
        size: narSize,
        served: "miss",
        upstream: this.downloadUpstreams.get(download),
        open: async (range) => ({
          body: await decompressedDownload(download, compression, range),
          length: range ? range.end - range.start + 1 : narSize,
          size: narSize,
        }),
      };
    }
    return {
      size: download.size,
      served: "miss",
      upstream: this.downloadUpstreams.get(download),
      open: async (range) => ({
        body: download.reader(range?.start ?? 0, range?.end),
        length: range ? range.end - range.start + 1 : download.size,
        size: download.size,
      }),
    };
  }

  private startDownload(record: NarInfoRecord): NarDownload {
    const existing = this.downloads.get(record.narKey);
    if (existing && !existing.failed) return existing;
    const upstream = this.opts.pool.upstreams.find((u) => u.is(record.upstream))!;
    const tempPath = join(this.opts.tempDir, tempFileName("download", record.narKey));
    const chunks = this.chunksNar(record) && this.opts.chunking ? { sizes: this.opts.chunking.sizes, dir: `${tempPath}.chunks` } : undefined;
    const host = upstreamHostname(upstream.url);
    // The download outlives the request that started it: its span (a child of that request's)
    // is current for everything it does, the upstream request and the storage commit included.
    const span = this.instruments.startSpan("ncps.nar.download", { "ncps.nar.key": record.narKey, "ncps.upstream": host });
    const startedAt = performance.now();
    const download = span.run(() => new NarDownload(
      record.narKey,
      tempPath,
      {
        url: withoutCredentials(record.upstreamNarUrl!), // older rows hold them; the upstream sends its own
        fetch: (url, signal) => upstream.get(url, signal),
        expect: this.expectation(record),
        chunks,
      },
      async (path, digest) => {
        await this.commitNar(record.narKey, path, digest, chunks?.dir);
        this.downloads.delete(record.narKey); // new requests now go to storage
      },
      this.opts.logger,
      this.opts.downloadLimits,
    ));
    this.downloads.set(record.narKey, download);
    this.downloadUpstreams.set(download, host);
    this.serveDecompressedIfNamedSo(download, record);
    this.downloadReady.set(
      download,
      download.started.then(async (answered) => {
        if (!answered) await this.forgetNarInfosNaming(record.narKey, upstream, download.failure);
        return answered;
      }),
    );
    this.instruments.downloadStarted(record.narKey, download.size, () => download.written);
    void download.done.then(() => this.downloadEnded(download, host, span, (performance.now() - startedAt) / 1000));
    const after = download.done
      .then(() => (download.failedVerification ? this.replaceFailedNarInfos(record.narKey, upstream) : undefined))
      .catch((error: unknown) => this.opts.logger.error("replacing a narinfo whose NAR failed failed", { key: record.narKey, error }))
      .finally(() => {
        if (this.downloads.get(record.narKey) === download) this.downloads.delete(record.narKey);
        this.aftermath.delete(after);
      });
    this.aftermath.add(after);
    this.opts.logger.info("NAR download started", { key: record.narKey, upstream: record.upstream });
    return download;
  }

  /** The upstream did not give the NAR its own narinfo named (a 404, an error, no answer):
   * its narinfos naming that NAR are forgotten (memory and database), so the next lookup asks
   * the upstreams again instead of serving a narinfo whose NAR cannot be had. An uploaded
   * narinfo (upstream null) is the uploader's and stays. */
  private async forgetNarInfosNaming(narKey: string, upstream: Upstream, failure: Error | null) {
    try {
      for (const n of await this.opts.db.narInfosForNar(narKey)) {
        if (!upstream.is(n.upstream)) continue;
        await this.opts.nars.forgetNarInfo(n.hash); // database and memory
        this.opts.logger.warn("narinfo forgotten: its upstream did not give the NAR it named", { hash: n.hash, key: narKey, upstream: upstream.url, reason: failure?.message });
      }
    } catch (error) {
      this.opts.logger.error("forgetting a narinfo whose NAR its upstream did not give failed", { key: narKey, error });
    }
  }

  /** The NAR an upstream's narinfo named did not match it (its unsigned FileSize or FileHash
   * lied, or the NAR is broken): that upstream goes last for those paths for a while, and when
   * another upstream has a path, its narinfo replaces the one that failed (memory and database),
   * so the next request does not fail the same way. With no other source the narinfo stays: a
   * NAR broken in transit is fetched again on the next request. A narinfo an upload recorded
   * (upstream null) is the uploader's and stays. */
  private async replaceFailedNarInfos(narKey: string, upstream: Upstream) {
    for (const n of await this.opts.db.narInfosForNar(narKey)) {
      if (!upstream.is(n.upstream)) continue;
      this.opts.pool.distrust(upstream, n.hash);
      const found = await this.opts.pool.lookupNarInfo(n.hash);
      if (!found || found.upstream === upstream) continue;
      await this.opts.nars.forgetNarInfo(n.hash);
      await this.opts.db.insertNarInfoIfAbsent(this.servedRecord(n.hash, found.upstream, found.narinfo));
      this.opts.hot.forget(n.hash);
      this.opts.logger.warn("narinfo replaced: the NAR it named failed verification", { hash: n.hash, key: narKey, upstream: upstream.url, now: found.upstream.url });
    }
  }

  private async commitNar(key: string, path: string, digest: VerifiedNar, chunkDir?: string) {
    if ((await this.opts.db.narInfosForNar(key)).length === 0) {
      this.opts.logger.info("NAR deleted while downloading; not stored", { key });
      return;
    }
    await inSpan(this.instruments, "ncps.storage.commit", { "ncps.nar.key": key, "ncps.nar.size": digest.fileSize }, () =>
      chunkDir && digest.chunks ? this.opts.nars.commitChunks(key, chunkDir, digest) : this.opts.nars.commitFile(key, path, digest),
    );
    this.opts.logger.info("NAR stored", { key, size: digest.fileSize });
  }

  /** A download ended, verified or not: its metrics, its span, the status page's list. */
  private downloadEnded(download: NarDownload, host: string, span: SpanHandle, seconds: number) {
    const failed = download.failed;
    this.instruments.upstreamNarFetch(host, seconds, download.written, failed ? "failed" : "verified");
    this.instruments.downloadEnded(download.key);
    span.setAttributes({ "ncps.nar.bytes": download.written, "ncps.nar.verified": !failed });
    this.noteFailure(download, host);
    if (failed) span.fail(download.failure ?? "download failed");
    span.end();
  }

  /** A download that failed, for the metrics and the status page: bytes that were not the NAR
   * are counted by reason. `from`: the upstream's host, or the replica streamed from. */
  private noteFailure(download: NarDownload, from: string) {
    if (!download.failed) return;
    if (download.failedVerification) {
      const reason = verificationReason(download.failure?.message ?? "");
      this.instruments.verificationFailed(reason);
      this.instruments.noteError(`NAR ${download.key} from ${from} failed verification (${reason})`);
    } else {
      this.instruments.noteError(`NAR ${download.key} from ${from}: ${download.failure?.message ?? "download failed"}`);
    }
  }

  /** A download of this NAR is running here (eviction leaves it alone). */
  isDownloading(narKey: string): boolean {
    const download = this.downloads.get(narKey);
    return download !== undefined && !download.failed;
  }

  /** Writes the access times of the narinfos served here that are still held in memory, and
   * has the other replicas write theirs (an eviction pass reads them next). */
  writeAccessTimes(): Promise<void> {
    return this.accessTimes.writeEverywhere();
  }

  /** Wait for every in-flight download (tests and graceful shutdown). */
  async drain(): Promise<void> {
    await Promise.all([...this.downloads.values()].map((d) => d.done));
    await Promise.all([...this.aftermath]);
  }

  async close(): Promise<void> {
    await this.drain();
    await this.accessTimes.close();
  }
}

/** The record's narinfo names its NAR uncompressed (our key ends in .nar) while its upstream
 * serves it compressed: written while chunking was enabled. */
function servedDecompressed(record: Pick<NarInfoRecord, "narKey" | "compression">): boolean {
  return uncompressedKey(record.narKey) && record.compression !== "none";
}

/** A download's bytes decompressed, or a range of them. The last byte of the NAR is held
 * back until the download's stream ends cleanly, which it does only once verified: no
 * client gets a complete-looking NAR that could still turn out wrong (a decoder may give
 * out the whole NAR before the compressed stream's last bytes arrive). */
async function decompressedDownload(download: NarDownload, compression: Compression, range?: ByteRange): Promise<ReadableStream<Uint8Array>> {
  const nar = (await decompressStream(compression, download.reader(0))).pipeThrough(holdLastByte());
  return range ? nar.pipeThrough(sliceStream(range)) : nar;
}

function holdLastByte(): TransformStream<Uint8Array, Uint8Array> {
  let held: Uint8Array | null = null;
  return new TransformStream({
    transform(chunk, controller) {
      if (chunk.length === 0) return;
      if (held) controller.enqueue(held);
      if (chunk.length > 1) controller.enqueue(chunk.subarray(0, chunk.length - 1));
      held = chunk.subarray(chunk.length - 1);
    },
    flush(controller) {
      if (held) controller.enqueue(held);
    },
  });
}
