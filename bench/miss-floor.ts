#!/usr/bin/env bun
/** The least a Bun relay does on a cold miss, measured beside the direct download: what
 * bench/miss-path.ts's ratios can reach on this machine at best.
 *
 *   bun bench/miss-floor.ts [--runs 3] [--small-mb 64] [--size-mb 200] [--only eight,one,decode]
 *
 * The same nginx upstream and NARs as miss-path.ts (made once, shared through
 * miss-data.ts), clients are curl. Each relay is a bare Bun.serve in its own process with
 * none of ncps's code: `pass` streams the upstream body to the client as it arrives; `file`
 * also writes it to a temp file (in order, as ncps's download does); `hash` also SHA-256es it
 * on the main thread. ncps does all of that and more (the hash on its own thread, its last
 * byte held for NarHash, the commit), so `hash` is a ceiling for ncps as it is built.
 * `native` stores the body through Bun.write and serves the client from the growing file
 * (nativeRelay): a ceiling for a download built that way.
 *
 * Cases:
 *   eight   8 different 64 MiB NARs at once from the 1 Gbit/s upstream, through each relay;
 *           and the p99 latency of a small answer from the relay's memory (a narinfo hit at
 *           its cheapest), probed as miss-path.ts does, idle and during the eight
 *   one     one 200 MiB uncompressed NAR from the unlimited upstream, through each relay
 *   decode  the compressed 200 MiB NAR decoded by the zstd and xz tools to /dev/null, against
 *           its direct download (unlimited and 1 Gbit/s): a miss's last byte waits for
 *           NarHash, so it cannot end before the whole NAR is decoded, and direct /
 *           max(direct, decode) bounds its ratio whatever the server does
 *
 * Prints one JSON line per measurement and the medians. Needs nginx, curl, zstd, xz. */
import { mkdir, mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { compressed, curlAll, rawNar, type Compression } from "./miss-data.ts";
import { HIT_PROBE_RATE, pacedLatency } from "./paced-latency.ts";
import { linkOrCopy } from "./publish-nar.ts";
import { startNginx } from "./nginx.ts";
import { median } from "./stats.ts";

type Relay = "pass" | "file" | "hash" | "native";
const RELAYS: Relay[] = ["pass", "file", "hash", "native"];
/** What the relay's /probe answers: about a narinfo's size, from memory. */
const PROBE_BODY = "StorePath: /nix/store/".padEnd(600, "x");

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
      const path = new URL(req.url).pathname;
      if (path === "/probe") return new Response(PROBE_BODY);
      const res = await fetch(upstream + path);
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
  const { values } = parseArgs({
    options: {
      runs: { type: "string", default: "3" },
      "small-mb": { type: "string", default: "64" },
      "size-mb": { type: "string", default: "200" },
      only: { type: "string", default: "eight,one,decode" },
    },
  });
  const runs = Number(values.runs);
  const smallMb = Number(values["small-mb"]);
  const sizeMb = Number(values["size-mb"]);
  const only = new Set(values.only.split(","));
  const work = await mkdtemp(join(tmpdir(), "ncps-missfloor-"));
  const root = join(work, "cache");
  await mkdir(root, { recursive: true });
  await writeFile(join(root, "nix-cache-info"), "StoreDir: /nix/store\n");
  for (let i = 0; i < 8; i++) await linkOrCopy(await rawNar(`small-${smallMb}-${i}`, smallMb, (i + 1) * smallMb), join(root, `n${i}.nar`)); // the NARs miss-path.ts uses
  const bigRaw = await rawNar(`big-${sizeMb}`, sizeMb, 0);
  const big: Record<Compression, string> = { none: bigRaw, zstd: await compressed(bigRaw, "zstd"), xz: await compressed(bigRaw, "xz") };
  for (const [c, path] of Object.entries(big)) await linkOrCopy(path, join(root, `big.nar.${c}`));
  const nginx = await startNginx(work, root, [{}, { extra: "limit_rate 125m;" }]);
  const [unlimited, limited] = nginx.urls as [string, string];
  const eightFrom = (base: string) => Array.from({ length: 8 }, (_, i) => `${base}/n${i}.nar`);

  /** A relay of `kind` in front of `upstream`, for the time of `use`. */
  async function withRelay<T>(upstream: string, kind: Relay, use: (url: string) => Promise<T>): Promise<T> {
    const temp = await mkdtemp(join(work, "relay-"));
    const relay = Bun.spawn(["bun", import.meta.path, "--relay", upstream, kind, temp], { stdout: "pipe" });
    const url = new TextDecoder().decode((await relay.stdout.getReader().read()).value).trim();
    try {
      return await use(url);
    } finally {
      relay.kill();
      await relay.exited;
      await rm(temp, { recursive: true, force: true });
    }
  }

  const results: Record<string, number[]> = {};
  const record = (line: Record<string, unknown>, values: Record<string, number>) => {
    console.log(JSON.stringify({ ...line, ...values }));
    for (const [name, value] of Object.entries(values)) (results[`${line.case}.${line.relay ?? ""}.${name}`.replace("..", ".")] ??= []).push(value);
  };
  const seconds = async (command: string[]) => {
    const started = performance.now();
    if ((await Bun.spawn(command, { stdout: "ignore" }).exited) !== 0) throw new Error(`${command.join(" ")} failed`);
    return (performance.now() - started) / 1000;
  };

  try {
    for (let run = 1; run <= runs; run++) {
      if (only.has("eight")) {
        for (const kind of RELAYS) {
          const direct = await curlAll(eightFrom(limited));
          await withRelay(limited, kind, async (url) => {
            const probe = `${url}/probe`;
            await fetch(probe);
            const idle = (await pacedLatency(probe, { perSecond: HIT_PROBE_RATE, seconds: 2 })).p99ms;
            const misses = curlAll(eightFrom(url));
            const [through, busy] = await Promise.all([misses, pacedLatency(probe, { perSecond: HIT_PROBE_RATE, seconds: 60, until: misses })]);
            record({ run, case: "eight", relay: kind }, { ratio: direct / through, hitP99IdleMs: idle, hitP99BusyMs: busy.p99ms, hitP99x: busy.p99ms / idle });
          });
        }
      }
      if (only.has("one")) {
        for (const kind of RELAYS) {
          const direct = await curlAll([`${unlimited}/big.nar.none`]);
          const through = await withRelay(unlimited, kind, (url) => curlAll([`${url}/big.nar.none`]));
          record({ run, case: "one", relay: kind }, { ratio: direct / through });
        }
      }
      if (only.has("decode")) {
        for (const c of ["zstd", "xz"] as const) {
          const decode = await seconds([c, "-dcq", big[c]]);
          for (const [label, base] of [["unlimited", unlimited], ["limited", limited]] as const) {
            const direct = await curlAll([`${base}/big.nar.${c}`]);
            record({ run, case: `decode.${c}.${label}` }, { decodeS: decode, directS: direct, ceiling: direct / Math.max(direct, decode) });
          }
        }
      }
    }
    console.log(JSON.stringify({ summary: "medians", runs, ...Object.fromEntries(Object.entries(results).map(([k, xs]) => [k, Number(median(xs).toFixed(3))])) }));
  } finally {
    await nginx.stop();
    await rm(work, { recursive: true, force: true });
  }
}
