/** BlobStore on an S3-compatible bucket (AWS S3, MinIO, Garage...). Objects appear only
 * whole: a small object is one PutObject, a larger one (or a stream of unknown length) a
 * multipart upload that becomes visible on CompleteMultipartUpload and is aborted on any
 * failure. Memory per upload is bounded by two parts, whatever the object's size. */
import { unlink } from "node:fs/promises";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
} from "@aws-sdk/client-s3";
import { FetchHttpHandler } from "@smithy/fetch-http-handler";
import { TooLargeError } from "../streams.ts";
import { BlobRangeError, InvalidBlobKeyError, type BlobBody, type BlobListEntry, type BlobStat, type BlobStore, type ByteRange } from "./blob-store.ts";
import { checkPrefix, validateKey } from "./keys.ts";

export interface S3BlobStoreOptions {
  bucket: string;
  /** http(s)://host[:port]; absent: AWS's endpoint for the region */
  endpoint?: string;
  /** default us-east-1 (self-hosted servers accept any) */
  region?: string;
  /** Both or neither. Without them, the AWS SDK's default credential chain: the
   * environment (AWS_ACCESS_KEY_ID...), the shared credentials and config files (AWS_PROFILE,
   * AWS_SHARED_CREDENTIALS_FILE), SSO, web identity (EKS), container and instance roles;
   * refreshed before they expire. */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** `endpoint/bucket/key` instead of `bucket.endpoint/key` (MinIO, Garage, s3rver) */
  forcePathStyle?: boolean;
  /** keys live under `<prefix>/`, so one bucket can hold several caches */
  prefix?: string;
  /** size of the first 1000 parts of a multipart upload; later parts grow (see partSizeFor) */
  partSize?: number;
  /** keys per ListObjectsV2 page */
  listPageSize?: number;
}

const MiB = 1024 * 1024;
/** S3's smallest part (all but the last) */
const MIN_PART_SIZE = 5 * MiB;
const DEFAULT_PART_SIZE = 8 * MiB;
/** S3's largest part number */
const MAX_PARTS = 10_000;

export class S3BlobStore implements BlobStore {
  readonly bucket: string;
  /** "" or "some/prefix/" */
  readonly keyPrefix: string;
  private readonly client: S3Client;
  private readonly partSize: number;
  private readonly listPageSize: number;
  private readonly where: string;

  constructor(opts: S3BlobStoreOptions) {
    this.bucket = opts.bucket;
    this.keyPrefix = normalizePrefix(opts.prefix ?? "");
    this.partSize = Math.max(MIN_PART_SIZE, opts.partSize ?? DEFAULT_PART_SIZE);
    this.listPageSize = opts.listPageSize ?? 1000;
    this.where = `S3 bucket ${opts.bucket}${opts.endpoint ? ` at ${opts.endpoint}` : ""}`;
    this.client = new S3Client({
      endpoint: opts.endpoint,
      region: opts.region || "us-east-1",
      forcePathStyle: opts.forcePathStyle ?? false,
      // undefined: the SDK's default chain (fromNodeProviderChain's)
      credentials: opts.accessKeyId !== undefined && opts.secretAccessKey !== undefined ? { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey } : undefined,
      // Bun's own fetch: request bodies leave with fewer copies than through node:http
      // (a 300 MB upload grew RSS by about 3x less, measured), and response bodies are
      // web streams that Bun.serve sends as they are.
      requestHandler: new FetchHttpHandler(),
      // The SDK's default checksums wrap streamed bodies in aws-chunked framing, which some
      // S3 servers store as part of the object (see ARCHITECTURE.md): only when required.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
  }

  /** Credentials found (from the options or the AWS chain), then HeadBucket: the endpoint
   * answers, the bucket exists, the credentials may use it. */
  async check(): Promise<void> {
    try {
      await this.client.config.credentials();
    } catch (err) {
      throw new Error(
        `${this.where}: no credentials: neither --cache-storage-s3-access-key-id/--cache-storage-s3-secret-access-key nor the AWS chain ` +
          `(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE in the shared credentials or config file, web identity, container or instance role) gave any: ${describeError(err)}`,
      );
    }
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      const status = httpStatus(err);
      if (status === 404) throw new Error(`${this.where} does not exist`);
      if (status === 403 || status === 401) {
        throw new Error(`${this.where} refused access: check the access key id and secret access key (HTTP ${status})`);
      }
      if (status === 301) throw new Error(`${this.where} is in another region: set --cache-storage-s3-region (HTTP 301)`);
      throw new Error(`${this.where} cannot be reached: ${describeError(err)}`);
    }
  }

  async stat(key: string): Promise<BlobStat | null> {
    const Key = this.objectKey(key);
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }));
      return { size: head.ContentLength ?? 0 };
    } catch (err) {
      if (httpStatus(err) === 404) return null;
      throw err;
    }
  }

  /** A ranged GetObject for a range. Its end past the object is clamped (as HTTP does); a
   * start past it throws BlobRangeError. */
  async get(key: string, range?: ByteRange): Promise<BlobBody | null> {
    const Key = this.objectKey(key);
    if (range && !isWellFormed(range)) {
      const stat = await this.stat(key);
      if (!stat) return null;
      throw new BlobRangeError(range, stat.size);
    }
    let res;
    try {
      res = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key, Range: range ? `bytes=${range.start}-${range.end}` : undefined }),
      );
    } catch (err) {
      const status = httpStatus(err);
      if (status === 404) return null;
      if (status === 416 && range) {
        const stat = await this.stat(key);
        if (!stat) return null;
        throw new BlobRangeError(range, stat.size);
      }
      throw err;
    }
    if (!res.Body) throw new Error(`S3 GetObject ${Key} answered without a body`);
    const body = res.Body.transformToWebStream() as ReadableStream<Uint8Array>;
    const sent = contentRangeOf(res.ContentRange, res.ContentLength);
    if (!sent) {
      await body.cancel();
      throw new Error(`S3 GetObject ${Key} answered without a usable Content-Length or Content-Range`);
    }
    if (!range) return { body, length: sent.size, size: sent.size };
    const start = range.start;
    const end = Math.min(range.end, sent.size - 1);
    if (sent.start !== start || sent.end < end) {
      await body.cancel();
      throw new Error(`S3 GetObject ${Key} answered bytes ${sent.start}-${sent.end} for a request of ${start}-${end}`);
    }
    const length = end - start + 1;
    // some servers send more than asked (s3rver reads "bytes=0-0" as "bytes=0-"): cut it
    return { body: sent.end > end ? firstBytes(body, length) : body, length, size: sent.size };
  }

  /** Streams the file up (bounded memory), then removes it. */
  async putFile(key: string, sourcePath: string): Promise<void> {
    this.objectKey(key); // refuse a bad key before touching the source
    await this.putStream(key, Bun.file(sourcePath).stream());
    await unlink(sourcePath);
  }

  /** putFile's upload, not part of BlobStore: one PutObject or a multipart upload, aborted on
   * any failure, so nothing is left behind if the stream errors or passes `maxBytes`
   * (TooLargeError); the stream is cancelled then. Returns the number of bytes stored. */
  async putStream(key: string, body: ReadableStream<Uint8Array>, maxBytes?: number): Promise<number> {
    let Key: string;
    try {
      Key = this.objectKey(key);
    } catch (err) {
      await body.cancel(err).catch(() => {});
      throw err;
    }
    const reader = new PartReader(body, maxBytes);
    let uploadId: string | undefined;
    // one part uploads while the next one is read: at most two parts in memory
    let uploading: Promise<void> | null = null;
    try {
      const first = await reader.read(this.partSizeFor(1), 1);
      if (first.last) {
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: first.bytes, ContentLength: first.bytes.byteLength }));
        return reader.total;
      }
      const created = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key }));
      uploadId = created.UploadId;
      if (!uploadId) throw new Error(`S3 CreateMultipartUpload ${Key} answered without an upload id`);
      const parts: CompletedPart[] = [];
      let part = first;
      for (let partNumber = 1; ; partNumber++) {
        if (uploading) await uploading;
        uploading = this.uploadPart(Key, uploadId, partNumber, part.bytes).then((etag) => {
          parts.push({ PartNumber: partNumber, ETag: etag });
        });
        uploading.catch(() => {}); // awaited below; no unhandled rejection meanwhile
        if (part.last) break;
        if (partNumber === MAX_PARTS) throw new Error(`object ${key} needs more than ${MAX_PARTS} parts`);
        part = await reader.read(this.partSizeFor(partNumber + 1), partNumber + 1);
        if (part.bytes.byteLength === 0) break; // the stream ended exactly at a part boundary
      }
      await uploading;
      parts.sort((a, b) => a.PartNumber! - b.PartNumber!);
      await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
      );
      return reader.total;
    } catch (err) {
      // stop the producer when we are the ones giving up (harmless if it already failed)
      await reader.cancel(err);
      if (uploadId) {
        // a part still in flight could land after the abort and keep the upload alive
        await uploading?.catch(() => {});
        // best effort: a bucket lifecycle rule (AbortIncompleteMultipartUpload) is the backstop
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId: uploadId })).catch(() => {});
      }
      throw err;
    } finally {
      reader.release();
    }
  }

  async delete(key: string): Promise<boolean> {
    // DeleteObject answers 204 whether or not the object existed: ask first
    if (!(await this.stat(key))) return false;
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
    return true;
  }

  /** ListObjectsV2, one page at a time. */
  async *list(prefix: string): AsyncIterable<BlobListEntry> {
    checkPrefix(prefix);
    let ContinuationToken: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.keyPrefix + prefix, MaxKeys: this.listPageSize, ContinuationToken }),
      );
      for (const item of page.Contents ?? []) {
        if (item.Key === undefined || !item.Key.startsWith(this.keyPrefix)) continue;
        yield { key: item.Key.slice(this.keyPrefix.length), size: item.Size ?? 0, modifiedAt: item.LastModified?.getTime() ?? 0 };
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
  }

  /** The bucket key of a store key; throws InvalidBlobKeyError for a key local storage refuses too. */
  objectKey(key: string): string {
    validateKey(key);
    return this.keyPrefix + key;
  }

  /** 8 MiB parts reach 80 GB at S3's 10,000 parts; growing by the base size every 1000
   * parts reaches 430 GB without holding bigger parts for ordinary NARs. */
  private partSizeFor(partNumber: number): number {
    return this.partSize * (1 + Math.floor((partNumber - 1) / 1000));
  }

  private async uploadPart(Key: string, UploadId: string, PartNumber: number, bytes: Uint8Array): Promise<string> {
    const res = await this.client.send(
      new UploadPartCommand({ Bucket: this.bucket, Key, UploadId, PartNumber, Body: bytes, ContentLength: bytes.byteLength }),
    );
    if (!res.ETag) throw new Error(`S3 UploadPart ${Key} #${PartNumber} answered without an ETag`);
    return res.ETag;
  }
}

/** Reads a byte stream in parts of a given size, counting against `maxBytes`. Parts are
 * copied into two buffers used in turn (one uploads while the other fills): a fresh buffer
 * per part left the GC far behind (measured). */
class PartReader {
  total = 0;
  /** the rest of a chunk that did not fit in the previous part */
  private leftover: Uint8Array | null = null;
  private ended = false;
  private readonly reader;
  private readonly buffers: (Uint8Array | undefined)[] = [undefined, undefined];

  constructor(
    body: ReadableStream<Uint8Array>,
    private readonly maxBytes: number | undefined,
  ) {
    this.reader = body.getReader();
  }

  /** Up to `size` bytes; `last` when the stream ended within them. The bytes of part n
   * stay valid until part n + 2 is read. */
  async read(size: number, partNumber: number): Promise<{ bytes: Uint8Array; last: boolean }> {
    const chunks: Uint8Array[] = [];
    let length = 0;
    while (length < size) {
      let chunk = this.leftover;
      this.leftover = null;
      if (!chunk) {
        if (this.ended) break;
        const { done, value } = await this.reader.read();
        if (done) {
          this.ended = true;
          break;
        }
        this.total += value.byteLength;
        if (this.maxBytes !== undefined && this.total > this.maxBytes) throw new TooLargeError(this.maxBytes);
        chunk = value;
      }
      if (length + chunk.byteLength > size) {
        this.leftover = chunk.subarray(size - length);
        chunk = chunk.subarray(0, size - length);
      }
      chunks.push(chunk);
      length += chunk.byteLength;
    }
    const last = this.ended && this.leftover === null;
    if (chunks.length === 1) return { bytes: chunks[0]!, last };
    // the last part (a small object's only one) gets a buffer of its own size
    const target = last ? new Uint8Array(length) : this.buffer(partNumber % 2, size);
    let offset = 0;
    for (const chunk of chunks) {
      target.set(chunk, offset);
      offset += chunk.byteLength;
    }
    return { bytes: target.subarray(0, length), last };
  }

  private buffer(slot: number, size: number): Uint8Array {
    let buffer = this.buffers[slot];
    if (!buffer || buffer.byteLength < size) this.buffers[slot] = buffer = new Uint8Array(size);
    return buffer;
  }

  async cancel(reason: unknown): Promise<void> {
    await this.reader.cancel(reason).catch(() => {});
  }

  release(): void {
    this.reader.releaseLock();
  }
}

/** The first `length` bytes of `body`; the rest is not read. */
function firstBytes(body: ReadableStream<Uint8Array>, length: number): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let left = length;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) {
        controller.close();
        return;
      }
      const chunk = value.byteLength > left ? value.subarray(0, left) : value;
      left -= chunk.byteLength;
      controller.enqueue(chunk);
      if (left === 0) {
        controller.close();
        await reader.cancel().catch(() => {});
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

function isWellFormed(range: ByteRange): boolean {
  return Number.isSafeInteger(range.start) && Number.isSafeInteger(range.end) && range.start >= 0 && range.start <= range.end;
}

/** What a GetObject sent: from `Content-Range: bytes a-b/size`, else the whole object. */
function contentRangeOf(contentRange: string | undefined, contentLength: number | undefined) {
  if (contentRange) {
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(contentRange.trim());
    return m ? { start: Number(m[1]), end: Number(m[2]), size: Number(m[3]) } : null;
  }
  return contentLength === undefined ? null : { start: 0, end: contentLength - 1, size: contentLength };
}

/** "" or "a/b/" from "a/b", "/a/b/" ...; refuses what a key would refuse. */
export function normalizePrefix(prefix: string): string {
  const trimmed = prefix.replace(/^\/+|\/+$/g, "");
  if (trimmed === "") return "";
  try {
    validateKey(trimmed);
  } catch (err) {
    throw new InvalidBlobKeyError(`S3 key prefix ${JSON.stringify(prefix)}: ${(err as Error).message.replace(/^blob key "[^"]*" /, "")}`);
  }
  return `${trimmed}/`;
}

function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/** One line: the SDK's "UnknownError" says nothing, the network error's code does. */
function describeError(err: unknown): string {
  const e = err as { code?: string; name?: string; message?: string; errors?: { code?: string }[] };
  const code = e?.code ?? e?.errors?.find((inner) => inner.code)?.code;
  const status = httpStatus(err);
  const message = e?.message && e.message !== "UnknownError" ? e.message : undefined;
  const text = [code && !message?.startsWith(code) ? code : undefined, message, status ? `HTTP ${status}` : undefined]
    .filter(Boolean)
    .join(": ");
  return (text || String(err)).split("\n")[0]!;
}
