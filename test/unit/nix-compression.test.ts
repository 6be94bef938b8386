import { describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brotliCompressSync, constants as zlibConstants, gzipSync, zstdCompressSync } from "node:zlib";
import {
  canDecompress,
  compressionExtension,
  compressionFromExtension,
  decompressStream,
  parseCompression,
  type Compression,
} from "../../src/nix/compression.ts";
import { NixFormatError } from "../../src/nix/errors.ts";
import { hasCommand, testIf } from "../helpers/prereq.ts";

const ALL: Compression[] = ["none", "xz", "zstd", "bzip2", "br", "lzip", "lz4", "gzip"];

/** Deterministic bytes that compress somewhat (runs of text with random noise mixed in). */
function sampleData(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = (x & 0xf) < 10 ? 97 + ((i >> 6) % 26) : x & 0xff;
  }
  return out;
}

/** A stream that hands `data` out in uneven chunks, so decoders see split frames. */
function chunked(data: Uint8Array, seed = 7): ReadableStream<Uint8Array> {
  let offset = 0;
  let x = seed;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= data.length) return controller.close();
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      const n = 1 + (x % 9000);
      controller.enqueue(data.slice(offset, offset + n));
      offset += n;
    },
  });
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function decompressAll(c: Compression, data: Uint8Array): Promise<Uint8Array> {
  return collect(await decompressStream(c, chunked(data)));
}

function spawnCompress(cmd: string[], input: Uint8Array): Uint8Array {
  const r = Bun.spawnSync(cmd, { stdin: input });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed: ${r.stderr.toString()}`);
  return new Uint8Array(r.stdout);
}

// Brotli's default quality (11) takes seconds per megabyte; quality 5 is what matters here.
const brotli = (d: Uint8Array) => brotliCompressSync(d, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 5 } });
const xzTool = (d: Uint8Array) => spawnCompress(["xz", "-c", "-6", "-T1"], d);
const zstdTool = (d: Uint8Array) => spawnCompress(["zstd", "-c", "-q", "-3"], d);
const haveTools = hasCommand("xz") && hasCommand("zstd");
const toolTest = testIf(haveTools, "the xz and zstd command-line tools are needed");

describe("compression names", () => {
  test("parseCompression accepts exactly Nix's names", () => {
    for (const c of ALL) expect(parseCompression(c)).toBe(c);
  });

  test("a missing or empty Compression field means bzip2, as in Nix", () => {
    expect(parseCompression(undefined)).toBe("bzip2");
    expect(parseCompression("")).toBe("bzip2");
  });

  test("unknown names are a NixFormatError on the Compression field", () => {
    for (const bad of ["XZ", "zst", "gz", "bz2", "lzma", " xz", "xz ", "none\n", "brotli"]) {
      let caught: unknown;
      try {
        parseCompression(bad);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(NixFormatError);
      expect((caught as NixFormatError).field).toBe("Compression");
    }
  });

  test("extensions follow Nix's binary cache store, .gz for gzip", () => {
    const want: Record<Compression, string> = {
      none: "",
      xz: ".xz",
      zstd: ".zst",
      bzip2: ".bz2",
      br: ".br",
      lzip: ".lzip",
      lz4: ".lz4",
      gzip: ".gz",
    };
    for (const c of ALL) {
      expect(compressionExtension(c)).toBe(want[c]);
      if (c !== "none") expect(compressionFromExtension(want[c])).toBe(c);
    }
    for (const other of ["", ".nar", "xz", ".XZ", ".zstd", ".bzip2", ".lzma", ".gzip"]) {
      expect(compressionFromExtension(other)).toBeNull();
    }
  });

  test("canDecompress is true for none, xz, zstd, br, gzip only", () => {
    expect(ALL.filter(canDecompress).sort()).toEqual(["br", "gzip", "none", "xz", "zstd"]);
  });
});

describe("decompressStream", () => {
  const data = sampleData(3_000_000);

  test("none passes bytes through", async () => {
    expect(await decompressAll("none", data)).toEqual(data);
  });

  toolTest("zstd made by the zstd tool", async () => {
    const compressed = zstdTool(data);
    expect(compressed.length).toBeLessThan(data.length);
    expect(await decompressAll("zstd", compressed)).toEqual(data);
  });

  // xz -6 on a loaded 2-core machine can take longer than bun's default 5 s
  toolTest("xz made by the xz tool", async () => {
    const compressed = xzTool(data);
    expect(compressed.length).toBeLessThan(data.length);
    expect(await decompressAll("xz", compressed)).toEqual(data);
  }, 30_000);

  test("zstd, gzip and br made by node:zlib", async () => {
    expect(await decompressAll("zstd", zstdCompressSync(data))).toEqual(data);
    expect(await decompressAll("gzip", gzipSync(data))).toEqual(data);
    expect(await decompressAll("br", brotli(data))).toEqual(data);
  });

  toolTest("concatenated zstd frames and xz streams decode to the concatenation", async () => {
    const a = sampleData(100_000, 3);
    const b = sampleData(70_000, 4);
    const both = Buffer.concat([a, b]);
    expect(await decompressAll("zstd", Buffer.concat([zstdTool(a), zstdTool(b)]))).toEqual(new Uint8Array(both));
    expect(await decompressAll("xz", Buffer.concat([xzTool(a), xzTool(b)]))).toEqual(new Uint8Array(both));
  });

  test("an empty uncompressed stream stays empty", async () => {
    expect((await decompressAll("none", new Uint8Array(0))).length).toBe(0);
  });

  for (const c of ["bzip2", "lzip", "lz4"] as const) {
    test(`${c} is rejected as unsupported`, async () => {
      await expect(decompressStream(c, chunked(data))).rejects.toBeInstanceOf(NixFormatError);
    });
  }
});

describe("corrupt input errors instead of ending short", () => {
  const data = sampleData(500_000, 9);
  const corruptions: Record<string, (c: Uint8Array) => Uint8Array> = {
    "truncated by 1 byte": (c) => c.slice(0, c.length - 1),
    "truncated to half": (c) => c.slice(0, c.length >> 1),
    "one flipped byte": (c) => {
      const copy = c.slice();
      const i = copy.length >> 1;
      copy[i] = (copy[i] ?? 0) ^ 0x10;
      return copy;
    },
    "trailing junk": (c) => Buffer.concat([c, new Uint8Array([1, 2, 3, 4, 5])]),
    "garbage": () => sampleData(1000, 5),
    "empty": () => new Uint8Array(0),
  };

  const makers: [Compression, (d: Uint8Array) => Uint8Array, boolean][] = [
    ["zstd", zstdTool, haveTools],
    ["xz", xzTool, haveTools],
    ["gzip", (d) => gzipSync(d), true],
    ["br", brotli, true],
  ];
  for (const [c, make, available] of makers) {
    for (const [what, corrupt] of Object.entries(corruptions)) {
      // A flipped byte inside brotli/gzip data can land where neither format checks; zstd
      // (content checksum on by default) and xz (CRC64) must catch it.
      if (what === "one flipped byte" && (c === "br" || c === "gzip")) continue;
      testIf(available, "the xz and zstd command-line tools are needed")(`${c}: ${what}`, async () => {
        const bad = corrupt(make(data));
        let result: Uint8Array | undefined;
        let caught: unknown;
        try {
          result = await decompressAll(c, bad);
        } catch (err) {
          caught = err;
        }
        expect(result).toBeUndefined();
        expect(caught).toBeInstanceOf(Error);
      });
    }
  }
});

describe("xz inside a compiled binary", () => {
  // The xz decoder is WebAssembly embedded in the binary: nothing is unpacked to TMPDIR or
  // executed from it, so a missing TMPDIR changes nothing for xz (issue 19).
  testIf(haveTools, "the xz tool is needed")(
    "a compiled program with a missing TMPDIR decodes zstd and xz",
    async () => {
      const dir = await mkdtemp(join(tmpdir(), "ncps-xz-compiled-"));
      try {
        const compressionModule = join(import.meta.dir, "../../src/nix/compression.ts");
        const program = join(dir, "prog.ts");
        await Bun.write(
          program,
          `import { decompressStream } from ${JSON.stringify(compressionModule)};
const [, , zstdB64, xzB64] = process.argv;
console.log("started");
for (const [c, b64] of [["zstd", zstdB64], ["xz", xzB64]] as const) {
  try {
    const out = await decompressStream(c, new Blob([Buffer.from(b64 ?? "", "base64")]).stream());
    console.log(c, "ok", (await new Response(out).text()).length);
  } catch (e) {
    console.log(c, "error", (e as Error).message.split("\\n")[0]);
  }
}
`,
        );
        const binary = join(dir, "prog");
        const build = Bun.spawnSync([process.execPath, "build", "--compile", program, "--outfile", binary], { cwd: dir });
        expect(build.exitCode).toBe(0);
        const text = new TextEncoder().encode("hello ".repeat(1000));
        const args = [Buffer.from(zstdTool(text)).toString("base64"), Buffer.from(xzTool(text)).toString("base64")];

        const run = Bun.spawnSync([binary, ...args], { env: { ...process.env, TMPDIR: join(dir, "does-not-exist") } });
        expect(run.stdout.toString()).toBe("started\nzstd ok 6000\nxz ok 6000\n");
        expect(run.exitCode).toBe(0);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
    60_000,
  );
});
