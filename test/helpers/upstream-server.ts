/**
 * A real HTTP upstream serving a directory (a `file://` binary cache made by publishCache)
 * on 127.0.0.1, with request counters and fault injection.
 *
 * Built on node:http (Bun's implementation), not Bun.serve: in Bun 1.4.4 Bun.serve drops a
 * handler-set Content-Length on a streamed body and frames it chunked (oven-sh/bun#10507),
 * so a "cut" could not announce the full length and then break off, and "slow" or "corrupt"
 * bodies would not look like a real cache's responses. node:http keeps the header and lets
 * us destroy the socket mid-body.
 */
import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { join, sep } from "node:path";

export { freePort, startSilentPort, startStoppedPort, type SilentPort } from "./ports.ts";

export type Fault =
  /** Answer with this status (and a short text body) instead of the file. */
  | { kind: "status"; status: number }
  /** Read the request, never answer (until stop()). */
  | { kind: "hang" }
  /** Read the request, then break the connection without answering (a reset). */
  | { kind: "reset" }
  /** Wait, then serve normally. */
  | { kind: "delay"; ms: number }
  /** Send the full Content-Length, then break the connection after this many body bytes
   * (at most length - 1, so the body is always short). */
  | { kind: "cut"; afterBytes: number }
  /** Same length, wrong bytes: up to 16 bytes in the middle of the body are inverted. */
  | { kind: "corrupt" }
  /** Throttle the body to about this rate. */
  | { kind: "slow"; bytesPerSecond: number }
  /** Send this many body bytes (at most length - 1), then the rest once `until` settles: a
   * download the test can observe in flight and end when it chooses, whatever the speed. */
  | { kind: "hold"; afterBytes: number; until: Promise<unknown> };

export interface Upstream {
  url: string;
  port: number;
  dir: string;
  /** GET requests whose path starts with this ("/" is prepended when missing). */
  hits(pathOrPrefix: string): number;
  /** Every request, in arrival order (path without query string). */
  requests: { method: string; path: string }[];
  /** Sets (or with null, removes) the fault for `match`: a string matches paths starting
   * with it, a RegExp is tested against the path. The latest matching fault wins; faults
   * apply to GET and HEAD ("cut", "corrupt", "slow" and "hold" only change bodies). With
   * `times`, the fault applies to that many requests, then the path is served normally. */
  fault(match: string | RegExp, fault: Fault | null, opts?: { times?: number }): void;
  /** Closes the server and every connection, releasing hung and delayed requests. */
  stop(): Promise<void>;
}

function contentType(path: string): string {
  if (path.endsWith(".narinfo")) return "text/x-nix-narinfo";
  if (path.endsWith("/nix-cache-info")) return "text/x-nix-cache-info";
  if (/\.nar(\.[a-z0-9]+)?$/.test(path)) return "application/x-nix-nar";
  if (path.endsWith(".ls")) return "application/json";
  return "application/octet-stream";
}

function withSlash(p: string): string {
  return p.startsWith("/") ? p : `/${p}`;
}

function sameMatch(a: string | RegExp, b: string | RegExp): boolean {
  if (typeof a === "string" || typeof b === "string") return a === b;
  return a.source === b.source && a.flags === b.flags;
}

/** Parses a single `bytes=` range against a size: [start, end] inclusive, "unsatisfiable",
 * or null when there is no (usable) Range header and the whole file is sent. */
function parseRange(header: string | undefined, size: number): [number, number] | "unsatisfiable" | null {
  if (header === undefined) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (m === null) return null;
  const [, first = "", last = ""] = m;
  if (first === "" && last === "") return null;
  let start: number;
  let end: number;
  if (first === "") {
    const suffix = Number(last);
    if (suffix === 0) return "unsatisfiable";
    start = Math.max(size - suffix, 0);
    end = size - 1;
  } else {
    start = Number(first);
    end = last === "" ? size - 1 : Math.min(Number(last), size - 1);
  }
  if (start >= size || start > end) return "unsatisfiable";
  return [start, end];
}

export async function startUpstream(dir: string, opts: { port?: number } = {}): Promise<Upstream> {
  const root = await realpath(dir);
  const requests: { method: string; path: string }[] = [];
  const faults: { match: string | RegExp; fault: Fault; times?: number }[] = [];
  const sockets = new Set<Socket>();
  /** Requests parked by "hang" or waiting in "delay"; stop() ends them. */
  const parked = new Set<() => void>();
  let stopped = false;

  function faultFor(path: string): Fault | undefined {
    for (let i = faults.length - 1; i >= 0; i--) {
      const entry = faults[i];
      if (entry === undefined) continue;
      const { match } = entry;
      if (!(typeof match === "string" ? path.startsWith(match) : match.test(path))) continue;
      if (entry.times !== undefined && --entry.times <= 0) faults.splice(i, 1);
      return entry.fault;
    }
    return undefined;
  }

  function park(res: ServerResponse, ms?: number): Promise<void> {
    return new Promise((resolve) => {
      const release = () => {
        clearTimeout(timer);
        parked.delete(release);
        resolve();
      };
      const timer = ms === undefined ? undefined : setTimeout(release, ms);
      parked.add(release);
      res.on("close", release);
    });
  }

  /** Resolves once the chunk is handed to the socket, or the connection is gone. */
  function write(res: ServerResponse, chunk: Uint8Array): Promise<void> {
    return new Promise((resolve) => {
      if (res.destroyed) return resolve();
      res.once("close", resolve);
      res.write(chunk, () => {
        res.off("close", resolve);
        resolve();
      });
    });
  }

  async function sendBody(res: ServerResponse, file: string, start: number, end: number, fault: Fault | undefined) {
    const length = end - start + 1;
    const cutAt = fault?.kind === "cut" ? Math.max(0, Math.min(fault.afterBytes, length - 1)) : undefined;
    const corruptFrom = Math.floor(length / 2);
    const corruptTo = Math.min(corruptFrom + 16, length);
    const rate = fault?.kind === "slow" ? Math.max(1, fault.bytesPerSecond) : undefined;
    const holdAt = fault?.kind === "hold" ? Math.max(0, Math.min(fault.afterBytes, length - 1)) : undefined;
    const began = performance.now();
    let sent = 0;

    res.flushHeaders();
    const source = length > 0 ? createReadStream(file, { start, end, highWaterMark: 256 * 1024 }) : [];
    try {
      for await (const data of source as AsyncIterable<Buffer>) {
        let chunk: Buffer = data;
        if (res.destroyed) return;
        if (fault?.kind === "corrupt") {
          for (let p = Math.max(corruptFrom, sent); p < Math.min(corruptTo, sent + chunk.length); p++) {
            chunk[p - sent] = (chunk[p - sent] ?? 0) ^ 0xff;
          }
        }
        if (holdAt !== undefined && fault?.kind === "hold" && sent <= holdAt && sent + chunk.length > holdAt) {
          const before = chunk.subarray(0, holdAt - sent);
          if (before.length > 0) await write(res, before);
          sent += before.length;
          chunk = chunk.subarray(before.length);
          await Promise.race([fault.until.then(() => {}, () => {}), new Promise((resolve) => res.once("close", resolve))]);
          if (res.destroyed) return;
        }
        if (cutAt !== undefined && sent + chunk.length >= cutAt) {
          chunk = chunk.subarray(0, cutAt - sent);
          if (chunk.length > 0) await write(res, chunk);
          sent += chunk.length;
          break;
        }
        if (rate === undefined) {
          await write(res, chunk);
          sent += chunk.length;
          continue;
        }
        // Slow: small pieces, each sent no earlier than the rate allows.
        const piece = Math.max(1, Math.floor(rate / 20));
        for (let off = 0; off < chunk.length && !res.destroyed; off += piece) {
          const part = chunk.subarray(off, off + piece);
          const due = began + ((sent + part.length) / rate) * 1000;
          const wait = due - performance.now();
          if (wait > 0) await Bun.sleep(wait);
          await write(res, part);
          sent += part.length;
        }
      }
    } finally {
      if ("destroy" in source) source.destroy();
    }
    if (cutAt !== undefined) {
      // Breaking the connection (not ending the response) is what makes the client see an
      // error instead of a clean short body. Bun's node:http reports a write done while it
      // still holds small writes for the next tick; destroying at once would drop them.
      await new Promise((resolve) => setImmediate(resolve));
      res.destroy();
      return;
    }
    res.end();
  }

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const method = req.method ?? "GET";
    const rawPath = (req.url ?? "/").split("?")[0] ?? "/";
    requests.push({ method, path: rawPath });

    const plain = (status: number, text: string) => {
      res.writeHead(status, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(text) });
      res.end(text);
    };

    if (method !== "GET" && method !== "HEAD") return plain(405, "method not allowed\n");

    let decoded: string;
    try {
      decoded = decodeURIComponent(rawPath);
    } catch {
      return plain(400, "bad path\n");
    }
    if (decoded.includes("\0") || decoded.split(/[/\\]/).some((s) => s === "..")) {
      return plain(400, "bad path\n");
    }
    const file = join(root, decoded);
    if (file !== root && !file.startsWith(root + sep)) return plain(400, "bad path\n");

    const fault = faultFor(rawPath);
    if (fault?.kind === "status") return plain(fault.status, `injected fault ${fault.status}\n`);
    if (fault?.kind === "reset") return void req.socket.destroy();
    if (fault?.kind === "hang") {
      await park(res);
      if (!res.destroyed) res.destroy();
      return;
    }
    if (fault?.kind === "delay") {
      await park(res, fault.ms);
      if (stopped || res.destroyed) return void res.destroy();
    }

    let size: number;
    try {
      const info = await stat(file);
      if (!info.isFile()) return plain(404, "not found\n");
      size = info.size;
    } catch {
      return plain(404, "not found\n");
    }

    const range = parseRange(req.headers.range, size);
    if (range === "unsatisfiable") {
      res.writeHead(416, { "Content-Range": `bytes */${size}`, "Content-Length": 0 });
      return void res.end();
    }
    const [start, end] = range ?? [0, size - 1];
    const headers: Record<string, string | number> = {
      "Content-Type": contentType(file),
      "Content-Length": end - start + 1,
      "Accept-Ranges": "bytes",
    };
    if (range !== null) headers["Content-Range"] = `bytes ${start}-${end}/${size}`;
    res.writeHead(range === null ? 200 : 206, headers);
    if (method === "HEAD") return void res.end();
    await sendBody(res, file, start, end, fault);
  }

  const server = createServer({ noDelay: true, keepAlive: true }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { "Content-Type": "text/plain" });
        res.end(`upstream test server error: ${String(err)}\n`);
      } else {
        res.destroy();
      }
    });
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    // Nix opens up to 25 connections at once; a small backlog drops some (see notes).
    server.listen({ port: opts.port ?? 0, host: "127.0.0.1", backlog: 1024 }, () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no TCP address");
  const port = address.port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    dir: root,
    requests,
    hits(pathOrPrefix: string) {
      const prefix = withSlash(pathOrPrefix);
      return requests.filter((r) => r.method === "GET" && r.path.startsWith(prefix)).length;
    },
    fault(match: string | RegExp, fault: Fault | null, opts: { times?: number } = {}) {
      const key = typeof match === "string" ? withSlash(match) : match;
      for (let i = faults.length - 1; i >= 0; i--) {
        const entry = faults[i];
        if (entry !== undefined && sameMatch(entry.match, key)) faults.splice(i, 1);
      }
      if (fault !== null) faults.push({ match: key, fault, ...(opts.times !== undefined ? { times: opts.times } : {}) });
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const release of [...parked]) release();
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
