/** NarDownload against a real HTTP upstream whose body the test controls: what a client may
 * read before the hashes check out, and what it gets when they do not. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NarDownload } from "../../src/cache/nar-download.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { Upstream } from "../../src/upstream/upstream.ts";

const SIZE = 64 * 1024;
const payload = crypto.getRandomValues(new Uint8Array(SIZE));
const hash = `sha256:${encodeNix32(new Bun.CryptoHasher("sha256").update(payload).digest())}`;

/** How the upstream sends the body: all of it then waits for `finish`, slowly, or wrong. */
type Mode = "hold-end" | "slow" | "corrupt";
let mode: Mode = "hold-end";
let finish: () => void = () => {};
let server: ReturnType<typeof Bun.serve>;
let dir: string;
let seq = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "ncps-download-"));
  server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch() {
      if (mode === "corrupt") {
        const wrong = payload.slice();
        wrong[SIZE - 10]! ^= 0xff;
        return new Response(wrong);
      }
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(c) {
          if (sent >= SIZE) {
            if (mode === "hold-end") await new Promise<void>((r) => (finish = r));
            c.close();
            return;
          }
          if (mode === "slow") await Bun.sleep(100); // 8 chunks: ~800 ms, past the 300 ms header timeout
          const n = mode === "slow" ? SIZE / 8 : SIZE;
          c.enqueue(payload.subarray(sent, sent + n));
          sent += n;
        },
      });
      return new Response(body); // chunked: the end of the body is only known when it closes
    },
  });
});

afterAll(async () => {
  finish();
  server.stop(true);
  await rm(dir, { recursive: true, force: true });
});

function start(commit: () => Promise<void> = async () => {}) {
  const upstream = new Upstream(`http://127.0.0.1:${server.port}`, 0, { headerTimeoutMs: 300, logger: silentLogger });
  return new NarDownload(
    "nar/test.nar",
    join(dir, `dl-${++seq}`),
    { url: upstream.resolve("x.nar"), fetch: (url, signal) => upstream.get(url, signal), expect: { compression: "none", fileSize: SIZE, fileHash: hash, narSize: SIZE, narHash: hash } },
    async () => commit(),
    silentLogger,
  );
}

/** Reads what the stream gives within `ms`, then reports bytes and whether it ended or failed. */
async function readFor(stream: ReadableStream<Uint8Array>, ms: number) {
  const reader = stream.getReader();
  let bytes = 0;
  let ended: "open" | "closed" | "errored" = "open";
  const deadline = Bun.sleep(ms).then(() => "timeout" as const);
  for (;;) {
    const next = await Promise.race([reader.read().then((r) => r, () => "error" as const), deadline]);
    if (next === "timeout") break;
    if (next === "error") {
      ended = "errored";
      break;
    }
    if (next.done) {
      ended = "closed";
      break;
    }
    bytes += next.value.length;
  }
  return { bytes, ended, reader };
}

describe("NarDownload", () => {
  test("all bytes arrived but not verified yet: readers get all but the last byte, of the whole and of a range", async () => {
    mode = "hold-end";
    const download = start();
    const whole = await readFor(download.reader(), 500);
    expect(whole).toMatchObject({ bytes: SIZE - 1, ended: "open" });
    const range = await readFor(download.reader(0, 99), 200);
    expect(range).toMatchObject({ bytes: 99, ended: "open" });
    finish(); // the upstream ends the body: verification passes
    await download.done;
    const rest = await readFor(download.reader(), 2000);
    expect(rest).toMatchObject({ bytes: SIZE, ended: "closed" });
    await whole.reader.cancel(); // a client leaving: releases its hold on the temp file
    await range.reader.cancel();
  });

  test("wrong bytes of the right length: every reader gets an error, never a clean end; nothing committed", async () => {
    mode = "corrupt";
    let committed = false;
    const download = start(async () => {
      committed = true;
    });
    const whole = download.reader();
    const range = download.reader(0, 99);
    const [a, b] = await Promise.all([readFor(whole, 3000), readFor(range, 3000)]);
    await download.done;
    expect(a.ended).toBe("errored");
    expect(b.ended).toBe("errored");
    expect(a.bytes).toBeLessThan(SIZE);
    expect(committed).toBe(false);
    expect((await readdir(dir)).filter((f) => f.startsWith("dl-"))).toEqual([]);
  });

  test("a body slower than the upstream header timeout still completes", async () => {
    mode = "slow";
    let committed = false;
    const download = start(async () => {
      committed = true;
    });
    const got = await readFor(download.reader(), 10_000);
    await download.done;
    expect(got).toMatchObject({ bytes: SIZE, ended: "closed" });
    expect(committed).toBe(true);
  });
});
