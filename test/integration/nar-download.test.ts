/** NarDownload against a real HTTP upstream whose body the test controls: what a client may
 * read before the hashes check out, and what it gets when they do not. */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NarDownload } from "../../src/cache/nar-download.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { Upstream } from "../../src/upstream/upstream.ts";
import { eventually } from "../helpers/eventually.ts";

const SIZE = 64 * 1024;
const HEADER_TIMEOUT_MS = 300;
const payload = crypto.getRandomValues(new Uint8Array(SIZE));
const hash = `sha256:${encodeNix32(new Bun.CryptoHasher("sha256").update(payload).digest())}`;

/** How the upstream sends the body: all of it then waits for `finish`, half of it then the rest
 * after more than the header timeout, or wrong. */
type Mode = "hold-end" | "slow" | "corrupt";

/** Cleanups of the running test, run after it whatever its outcome. */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => {});
});

/** A temp directory and an upstream sending the payload as `mode` says; `start` begins a
 * download from it. */
async function fixture(mode: Mode) {
  const dir = await mkdtemp(join(tmpdir(), "ncps-download-"));
  let finish: () => void = () => {};
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const server = Bun.serve({
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
            if (mode === "hold-end") await finished;
            c.close();
            return;
          }
          // Slow: the second half comes after twice the header timeout, which must not apply
          // to the body (a fake upstream that has to be slow; no assertion times it).
          if (mode === "slow" && sent > 0) await Bun.sleep(2 * HEADER_TIMEOUT_MS);
          const n = mode === "slow" ? SIZE / 2 : SIZE;
          c.enqueue(payload.subarray(sent, sent + n));
          sent += n;
        },
      });
      return new Response(body); // chunked: the end of the body is only known when it closes
    },
  });
  cleanups.push(async () => {
    finish();
    server.stop(true);
    await rm(dir, { recursive: true, force: true });
  });
  let seq = 0;
  const start = (commit: () => Promise<void> = async () => {}) => {
    const upstream = new Upstream(`http://127.0.0.1:${server.port}`, 0, { headerTimeoutMs: HEADER_TIMEOUT_MS, logger: silentLogger });
    return new NarDownload(
      "nar/test.nar",
      join(dir, `dl-${++seq}`),
      { url: upstream.resolve("x.nar"), fetch: (url, signal) => upstream.get(url, signal), expect: { compression: "none", fileSize: SIZE, fileHash: hash, narSize: SIZE, narHash: hash } },
      async () => commit(),
      silentLogger,
    );
  };
  return { dir, start, finish };
}

/** Reads until `bytes` have arrived (the stream stays open), failing if it ends first. */
async function readUntil(stream: ReadableStream<Uint8Array>, bytes: number) {
  const reader = stream.getReader();
  let got = 0;
  while (got < bytes) {
    const next = await reader.read();
    if (next.done) throw new Error(`ended after ${got} of ${bytes} bytes`);
    got += next.value.length;
  }
  return { got, reader };
}

/** Reads to the end: the bytes, and whether the stream closed or errored. */
async function readToEnd(stream: ReadableStream<Uint8Array> | { read(): Promise<{ done: boolean; value?: Uint8Array }> }) {
  const reader = "getReader" in stream ? stream.getReader() : stream;
  let bytes = 0;
  try {
    for (;;) {
      const next = await reader.read();
      if (next.done) return { bytes, ended: "closed" as const };
      bytes += next.value?.length ?? 0;
    }
  } catch {
    return { bytes, ended: "errored" as const };
  }
}

/** Whether a read settles while the event loop runs everything already due. */
async function settlesNow(read: Promise<unknown>): Promise<boolean> {
  let settled = false;
  void read.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
  return settled;
}

describe("NarDownload", () => {
  test("all bytes arrived but not verified yet: readers get all but the last byte, of the whole and of a range", async () => {
    const { start, finish } = await fixture("hold-end");
    const download = start();
    const whole = await readUntil(download.reader(), SIZE - 1);
    expect(whole.got).toBe(SIZE - 1);
    await eventually("every byte arriving", () => download.written === SIZE, { deadlineMs: 5000, everyMs: 0 });
    const wholeLast = whole.reader.read();
    expect(await settlesNow(wholeLast)).toBe(false);
    const range = await readUntil(download.reader(0, 99), 99);
    expect(range.got).toBe(99);
    const rangeLast = range.reader.read();
    expect(await settlesNow(rangeLast)).toBe(false);

    finish(); // the upstream ends the body: verification passes
    await download.done;
    // A reader joining while the first two still hold the temp file gets the whole NAR.
    expect(await readToEnd(download.reader())).toEqual({ bytes: SIZE, ended: "closed" });
    expect((await wholeLast).value?.length).toBe(1);
    expect(await readToEnd(whole.reader)).toEqual({ bytes: 0, ended: "closed" });
    expect((await rangeLast).value?.length).toBe(1);
    expect(await readToEnd(range.reader)).toEqual({ bytes: 0, ended: "closed" });
  });

  test("wrong bytes of the right length: every reader gets an error, never a clean end; nothing committed", async () => {
    const { start, dir } = await fixture("corrupt");
    let committed = false;
    const download = start(async () => {
      committed = true;
    });
    const [a, b] = await Promise.all([readToEnd(download.reader()), readToEnd(download.reader(0, 99))]);
    await download.done;
    expect(a.ended).toBe("errored");
    expect(b.ended).toBe("errored");
    expect(a.bytes).toBeLessThan(SIZE);
    expect(committed).toBe(false);
    expect((await readdir(dir)).filter((f) => f.startsWith("dl-"))).toEqual([]);
  });

  test("a body slower than the upstream header timeout still completes", async () => {
    const { start } = await fixture("slow");
    let committed = false;
    const download = start(async () => {
      committed = true;
    });
    const got = await readToEnd(download.reader());
    await download.done;
    expect(got).toEqual({ bytes: SIZE, ended: "closed" });
    expect(committed).toBe(true);
  });
});
