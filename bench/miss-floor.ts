#!/usr/bin/env bun
/** The least a Bun relay does on a cold miss, measured beside the direct download: what
 * bench/miss-path.ts's eight-miss ratio can reach on this machine at best.
 *
 *   bun bench/miss-floor.ts [--runs 3] [--small-mb 64]
 *
 * The same nginx upstream as miss-path.ts (1 Gbit/s per connection), the same eight 64 MiB
 * NARs, eight curl clients at once. Four relays, each a bare Bun.serve in its own process
 * with none of ncps's code: `pass` streams the upstream body to the client as it arrives;
 * `file` also writes it to a temp file (in order, as ncps's download does); `hash` also
 * SHA-256es it on the main thread. ncps does all of that and more (the hash on its own
 * thread, its last byte held for NarHash, the commit), so `hash` is a ceiling for ncps as it
 * is built. `native` stores the body through Bun.write and serves the client from the
 * growing file (nativeRelay): a ceiling for a download built that way. Prints one JSON line
 * per run and the medians. Needs nginx and curl. */
import { mkdir, mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { curlAll, rawNar } from "./miss-data.ts";
import { startNginx } from "./nginx.ts";
import { median } from "./stats.ts";

type Relay = "pass" | "file" | "hash" | "native";

/** The `native` relay: the upstream body goes to the temp file through Bun.write (no chunk
 * of it in JavaScript) and the client reads the growing file, 256 KiB at a time, polling its
 * size every 2 ms. How a download could store a NAR with less work per byte than reading it
 * in JavaScript (not how ncps does it: no verification, no stall or size limits here). */
async function nativeRelay(res: Response, path: string): Promise<Response> {
  const size = Number(res.headers.get("content-length"));
  await Bun.write(path, "");
  let stored = false;
  void Bun.write(path, res).then(() => (stored = true));
  const file = await open(path, "r");
  let pos = 0;
  return new Response(
    new ReadableStream({
      async pull(controller) {
        for (;;) {
          const written = stored ? size : (await file.stat()).size;
          if (pos < written) {
            const buf = new Uint8Array(Math.min(256 * 1024, written - pos));
            const { bytesRead } = await file.read(buf, 0, buf.length, pos);
            pos += bytesRead;
            controller.enqueue(buf.subarray(0, bytesRead));
            if (pos >= size) {
              await file.close();
              controller.close();
            }
            return;
          }
          await Bun.sleep(2);
        }
      },
    }),
    { headers: { "content-length": String(size) } },
  );
}

if (process.argv[2] === "--relay") {
  // the relay process: argv upstream-url relay-kind temp-dir; prints its URL
  const [, , , upstream, kind, tempDir] = process.argv as [string, string, string, string, Relay, string];
  let n = 0;
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(req) {
      const res = await fetch(upstream + new URL(req.url).pathname);
      if (kind === "native") return nativeRelay(res, join(tempDir, `t${n++}`));
      const body = res.body!.getReader();
      const file = kind === "pass" ? null : await open(join(tempDir, `t${n++}`), "w");
      const hasher = kind === "hash" ? new Bun.CryptoHasher("sha256") : null;
      return new Response(
        new ReadableStream({
          async pull(controller) {
            const { done, value } = await body.read();
            if (done) {
              await file?.close();
              hasher?.digest();
              controller.close();
              return;
            }
            hasher?.update(value);
            if (file) await file.write(value); // in order, paced by the disk as ncps's download is
            controller.enqueue(value);
          },
        }),
        { headers: { "content-length": res.headers.get("content-length")! } },
      );
    },
  });
  console.log(server.url.href.replace(/\/$/, ""));
} else {
  const { values } = parseArgs({ options: { runs: { type: "string", default: "3" }, "small-mb": { type: "string", default: "64" } } });
  const runs = Number(values.runs);
  const smallMb = Number(values["small-mb"]);
  const work = await mkdtemp(join(tmpdir(), "ncps-missfloor-"));
  const root = join(work, "cache");
  await mkdir(root, { recursive: true });
  await writeFile(join(root, "nix-cache-info"), "StoreDir: /nix/store\n");
  for (let i = 0; i < 8; i++) {
    const path = await rawNar(`small-${smallMb}-${i}`, smallMb, (i + 1) * smallMb); // the NARs miss-path.ts uses
    await Bun.$`ln -f ${path} ${join(root, `n${i}.nar`)} 2>/dev/null || cp ${path} ${join(root, `n${i}.nar`)}`.quiet();
  }
  const nginx = await startNginx(work, root, [{ extra: "limit_rate 125m;" }]);
  const upstream = nginx.urls[0]!;

  const eightFrom = (base: string) => Array.from({ length: 8 }, (_, i) => `${base}/n${i}.nar`);

  const ratios: Record<Relay, number[]> = { pass: [], file: [], hash: [], native: [] };
  try {
    for (let run = 1; run <= runs; run++) {
      for (const kind of ["pass", "file", "hash", "native"] as Relay[]) {
        const direct = await curlAll(eightFrom(upstream));
        const temp = await mkdtemp(join(work, "relay-"));
        const relay = Bun.spawn(["bun", import.meta.path, "--relay", upstream, kind, temp], { stdout: "pipe" });
        const reader = relay.stdout.getReader();
        const url = new TextDecoder().decode((await reader.read()).value).trim();
        try {
          const through = await curlAll(eightFrom(url));
          console.log(JSON.stringify({ run, relay: kind, direct, through, ratio: direct / through }));
          ratios[kind].push(direct / through);
        } finally {
          relay.kill();
          await relay.exited;
          await rm(temp, { recursive: true, force: true });
        }
      }
    }
    console.log(JSON.stringify({ summary: "medians", runs, ...Object.fromEntries(Object.entries(ratios).map(([k, xs]) => [`${k}.ratio`, Number(median(xs).toFixed(3))])) }));
  } finally {
    await nginx.stop();
    await rm(work, { recursive: true, force: true });
  }
}
