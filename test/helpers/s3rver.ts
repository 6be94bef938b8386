/** A real S3 protocol server for tests: s3rver, run under node (under bun its list
 * pagination answers 500) in its own process, on a free loopback port, with a temp
 * directory and one bucket. It records every request so tests can check which multipart
 * uploads were left open: s3rver implements neither ListMultipartUploads (501) nor
 * AbortMultipartUpload (405), which real S3, MinIO and Garage do. */
import { S3Client } from "@aws-sdk/client-s3";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "./eventually.ts";
import { hasCommand } from "./prereq.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

export const s3rverAvailable = hasCommand("node") && (await Bun.file(join(ROOT, "node_modules/s3rver/package.json")).exists());

/** One request s3rver answered: `POST /bucket/key?uploads` and so on. */
export interface S3rverRequest {
  method: string;
  url: string;
  status: number;
  /** the Range header, if any */
  range?: string;
  /** the upload id a CreateMultipartUpload answered with */
  uploadId?: string;
}

export interface S3rver {
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** s3rver's data directory (objects live under `<dir>/<bucket>/`) */
  dir: string;
  requests(): readonly S3rverRequest[];
  /** Resolves once every request answered so far is in requests(): the log travels through a
   * pipe and can trail the HTTP answer, so a marker request is sent and awaited in the log. */
  settle(): Promise<void>;
  /** Upload ids created (in `bucket`, or any) and then neither completed nor aborted (an
   * abort counts even though s3rver answers it 405: the client did its part). */
  openMultipartUploads(bucket?: string): string[];
  stop(): Promise<void>;
}

// Runs in node. A middleware put in front of s3rver's own records each request with its
// final status (errors included) as one JSON line on stdout.
const runner = `
const S3rver = require("s3rver");
const [directory, bucket] = process.argv.slice(1);
const server = new S3rver({ directory, address: "127.0.0.1", port: 0, silent: true, configureBuckets: [{ name: bucket }] });
server.middleware.unshift(async (ctx, next) => {
  const line = { method: ctx.method, url: ctx.url, range: ctx.get("range") || undefined };
  try {
    await next();
    line.status = ctx.status;
    const m = typeof ctx.body === "string" ? /<UploadId>([^<]+)<\\/UploadId>/.exec(ctx.body) : null;
    if (m && "uploads" in ctx.query) line.uploadId = m[1];
  } catch (err) {
    line.status = err.status || 500;
    throw err;
  } finally {
    process.stdout.write(JSON.stringify({ request: line }) + "\\n");
  }
});
server.run().then(({ port }) => process.stdout.write(JSON.stringify({ listening: port }) + "\\n"), (err) => {
  console.error(err);
  process.exit(1);
});
`;

export async function startS3rver(opts: { bucket?: string } = {}): Promise<S3rver> {
  const bucket = opts.bucket ?? "ncps-test";
  const dir = await mkdtemp(join(tmpdir(), "ncps-s3rver-"));
  const proc = Bun.spawn(["node", "-e", runner, dir, bucket], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", NODE_OPTIONS: "--openssl-legacy-provider" },
  });
  const requests: S3rverRequest[] = [];
  const stderr: string[] = [];
  let onListening: (port: number) => void = () => {};
  const listening = new Promise<number>((resolve, reject) => {
    onListening = resolve;
    void proc.exited.then((code) => reject(new Error(`s3rver exited with ${code} before listening: ${stderr.join("")}`)));
  });
  void (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.stdout) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const msg = JSON.parse(line) as { listening?: number; request?: S3rverRequest };
          if (msg.listening !== undefined) onListening(msg.listening);
          if (msg.request) requests.push(msg.request);
        } catch {}
      }
    }
  })();
  void (async () => {
    for await (const chunk of proc.stderr) stderr.push(new TextDecoder().decode(chunk));
  })();
  let port: number;
  try {
    port = await Promise.race([listening, Bun.sleep(20_000).then(() => Promise.reject(new Error("s3rver did not start within 20 s")))]);
  } catch (err) {
    proc.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    dir,
    requests: () => requests,
    async settle() {
      const marker = `/__ncps_settle__/${crypto.randomUUID()}`;
      await fetch(`http://127.0.0.1:${port}${marker}`).then((r) => r.arrayBuffer(), () => undefined);
      await eventually("s3rver's request log catching up", () => requests.some((r) => r.url === marker), { deadlineMs: 10_000, everyMs: 5 });
    },
    openMultipartUploads(inBucket?: string) {
      const created = requests.flatMap((r) =>
        r.uploadId && r.status === 200 && (inBucket === undefined || r.url.startsWith(`/${inBucket}/`)) ? [r.uploadId] : [],
      );
      const finished = new Set(
        requests.flatMap((r) => {
          const id = new URL(r.url, "http://x").searchParams.get("uploadId");
          const completed = r.method === "POST" && r.status === 200;
          return id !== null && (completed || r.method === "DELETE") ? [id] : [];
        }),
      );
      return created.filter((id) => !finished.has(id));
    },
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** `ncps serve` flags for this server. */
export function s3Flags(s3: S3rver, prefix?: string): string[] {
  return [
    "--cache-storage-s3-bucket", s3.bucket,
    "--cache-storage-s3-endpoint", s3.endpoint,
    "--cache-storage-s3-access-key-id", s3.accessKeyId,
    "--cache-storage-s3-secret-access-key", s3.secretAccessKey,
    "--cache-storage-s3-force-path-style",
    ...(prefix ? ["--cache-storage-s3-prefix", prefix] : []),
  ];
}

/** An AWS SDK client on this server, for a test to look into the bucket itself. */
export function s3Client(s3: S3rver): S3Client {
  return new S3Client({
    endpoint: s3.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
}
