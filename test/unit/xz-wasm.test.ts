import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { XZ_EMBEDDED_WASM_BASE64 } from "../../src/nix/xz-embedded-wasm.ts";
import { xzDecompressStream } from "../../src/nix/xz-wasm.ts";
import { hasCommand, testIf } from "../helpers/prereq.ts";

const xzTest = testIf(hasCommand("xz"), "the xz tool is needed");

function xz(data: Uint8Array, ...flags: string[]): Uint8Array<ArrayBuffer> {
  const r = Bun.spawnSync(["xz", "-c", "-T1", ...flags], { stdin: data });
  if (r.exitCode !== 0) throw new Error(`xz failed: ${r.stderr.toString()}`);
  return new Uint8Array(r.stdout) as Uint8Array<ArrayBuffer>;
}

function text(n: number, seed: number): Uint8Array {
  return new TextEncoder().encode(Array.from({ length: n }, (_, i) => `line ${i * seed} of ${seed}\n`).join(""));
}

/** Hands out `parts` as given, so a test chooses exactly where chunks split. */
function streamOf(...parts: Uint8Array[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (i < parts.length) c.enqueue(parts[i++]!);
      else c.close();
    },
  });
}

async function decode(...parts: Uint8Array[]): Promise<Uint8Array> {
  return new Uint8Array(await new Response(xzDecompressStream(streamOf(...parts))).arrayBuffer());
}

describe("the embedded xz decoder", () => {
  test("is the wasm shipped in xz-decompress 0.2.3, byte for byte", async () => {
    const bundle = await readFile(require.resolve("xz-decompress"), "utf8");
    const shipped = /data:application\/wasm;base64,([A-Za-z0-9+/=]+)/.exec(bundle)?.[1];
    expect(shipped).toBe(XZ_EMBEDDED_WASM_BASE64);
    const digest = createHash("sha256").update(Buffer.from(XZ_EMBEDDED_WASM_BASE64, "base64")).digest("hex");
    expect(digest).toBe("eb37d130fd379597765e87a044b243fb6ac6d0870ea468374003b9d4c2bee0e4");
  });

  xzTest("empty chunks from the source are skipped, not taken for the end of input", async () => {
    const data = text(20_000, 3);
    const c = xz(data);
    const half = c.length >> 1;
    expect(await decode(new Uint8Array(0), c.subarray(0, half), new Uint8Array(0), c.subarray(half))).toEqual(data);
  });

  xzTest("stream padding between and after streams is accepted, as liblzma does", async () => {
    const a = text(1000, 5);
    const b = text(700, 7);
    const pad = new Uint8Array(8);
    const out = await decode(xz(a), pad, xz(b), pad.subarray(0, 4));
    expect(out).toEqual(new Uint8Array(Buffer.concat([a, b])));
  });

  xzTest("padding that is not a multiple of four bytes is rejected", async () => {
    await expect(decode(xz(text(100, 2)), new Uint8Array(3))).rejects.toThrow(/corrupt xz data/);
  });

  xzTest("every integrity check xz writes by default is verified: a flipped byte in CRC32 or CRC64 data fails", async () => {
    const data = text(50_000, 11);
    for (const check of ["crc32", "crc64"]) {
      const c = xz(data, `--check=${check}`);
      expect(await decode(c)).toEqual(data);
      const bad = c.slice();
      bad[bad.length - 20]! ^= 0x01; // inside the index / footer region
      await expect(decode(bad)).rejects.toThrow(/^xz: /);
    }
  });

  xzTest("what the decoder is not built for is refused, never passed through", async () => {
    const data = text(1000, 13);
    await expect(decode(xz(data, "--check=sha256"))).rejects.toThrow(/unsupported/);
    await expect(decode(xz(data, "--x86", "--lzma2=preset=1"))).rejects.toThrow(/unsupported/);
  });

  xzTest("concurrent streams decode independently, none waiting for another to finish", async () => {
    const a = text(30_000, 17);
    const b = text(30_000, 19);
    const ca: Uint8Array<ArrayBuffer> = xz(a);
    const cb = xz(b);
    // `a` stalls half-way until `b` is done: a process-wide decoder lock would deadlock here.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let sent = 0;
    const stalled = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (sent === 1) await gate;
        if (sent === 0) c.enqueue(ca.subarray(0, ca.length >> 1));
        else if (sent === 1) c.enqueue(ca.subarray(ca.length >> 1));
        else c.close();
        sent++;
      },
    });
    const first = new Response(xzDecompressStream(stalled)).arrayBuffer();
    expect(await decode(cb)).toEqual(b);
    release();
    expect(new Uint8Array(await first)).toEqual(new Uint8Array(a));
  });

  xzTest("cancelling the output cancels the input", async () => {
    let cancelled: unknown = null;
    const c = xz(text(200_000, 23), "-0");
    let sent = false;
    const input = new ReadableStream<Uint8Array>({
      pull(ctrl) {
        if (!sent) ctrl.enqueue(c.subarray(0, 4096));
        sent = true;
      },
      cancel(reason) {
        cancelled = reason ?? "cancelled";
      },
    });
    const reader = xzDecompressStream(input).getReader();
    expect((await reader.read()).done).toBe(false);
    await reader.cancel("enough");
    expect(cancelled).toBe("enough");
  });
});
