/** NarVerifier against NARs, hashes and binary caches made by the real Nix (Nix 2.8 here). */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCompression, type Compression } from "../../src/nix/compression.ts";
import { canonicalHash, formatHash, parseHash, sha256 } from "../../src/nix/hash.ts";
import { parseNarUrl } from "../../src/nix/nar-url.ts";
import { NarVerifier, NarVerifyError, type NarDigest, type NarExpectation } from "../../src/nix/nar-verifier.ts";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { baseNixConf } from "../helpers/nix.ts";
import { hasCommand, testIf } from "../helpers/prereq.ts";

const available = ["nix", "nix-store", "xz", "zstd", "sha256sum"].every(hasCommand);
const nixTest = testIf(available, "the real Nix (nix, nix-store) and xz, zstd, sha256sum are needed");


let root = "";
let tree = "";
let store = "";
let env: Record<string, string> = {};

function run(cmd: string[], stdin?: Uint8Array): Uint8Array {
  const r = Bun.spawnSync(cmd, { env, stdin: stdin ?? "ignore" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} exited ${r.exitCode}: ${r.stderr.toString()}`);
  return new Uint8Array(r.stdout);
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes).trim();

beforeAll(async () => {
  if (!available) return;
  root = await mkdtemp(join(tmpdir(), "ncps-nar-verify-"));
  const conf = join(root, "conf");
  await mkdir(conf);
  await writeFile(join(conf, "nix.conf"), baseNixConf);
  await mkdir(join(root, "xdg-config"));
  await mkdir(join(root, "xdg-cache"));
  const { NIX_REMOTE: _ignored, ...rest } = process.env;
  env = {
    ...(rest as Record<string, string>),
    NIX_CONF_DIR: conf,
    XDG_CONFIG_HOME: join(root, "xdg-config"),
    XDG_CACHE_HOME: join(root, "xdg-cache"),
  };
  store = join(root, "store");

  // A tree with what a NAR encodes: regular files, an executable, a symlink, nesting, and
  // one file of a few MB so the NAR spans many chunks.
  tree = join(root, "tree");
  await mkdir(join(tree, "bin"), { recursive: true });
  await mkdir(join(tree, "share/doc"), { recursive: true });
  await writeFile(join(tree, "share/doc/README"), "a store path for the NAR verifier test\n");
  await writeFile(join(tree, "bin/hello"), "#!/bin/sh\necho hello\n");
  await chmod(join(tree, "bin/hello"), 0o755);
  await symlink("../share/doc/README", join(tree, "bin/readme-link"));
  // (Nix's own brotli compression takes ~2 s per MB, hence not bigger.)
  const big = new Uint8Array(1_500_000);
  for (let i = 0; i < big.length; i += 65536) crypto.getRandomValues(big.subarray(i, i + 65536));
  for (let i = 0; i < big.length; i += 7) big[i] = 0x41; // partly compressible
  await writeFile(join(tree, "share/data.bin"), big);
  await writeFile(join(tree, "empty"), "");
});

afterAll(async () => {
  if (!root) return;
  Bun.spawnSync(["chmod", "-R", "u+w", root]);
  await rm(root, { recursive: true, force: true });
});

async function verifyFile(expect: NarExpectation, file: Uint8Array): Promise<NarDigest> {
  const v = new NarVerifier(expect);
  try {
    for (let offset = 0; offset < file.length; offset += 65536) await v.write(file.slice(offset, offset + 65536));
    return await v.end();
  } finally {
    v.abort("test done");
  }
}

async function rejects(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof NarVerifyError) return err.reason;
    throw err;
  }
  throw new Error("verification passed but should have failed");
}

function flipBit(bytes: Uint8Array, at: number): Uint8Array {
  const copy = bytes.slice();
  copy[at] = (copy[at] ?? 0) ^ 0x04;
  return copy;
}

describe("NARs dumped by nix-store", () => {
  nixTest(
    "xz and zstd compressed NARs verify with Nix's NarHash and sha256sum's FileHash; bit flips reject",
    async () => {
      const narPath = join(root, "x.nar");
      const nar = run(["nix-store", "--dump", tree]);
      await Bun.write(narPath, nar);
      const narHash = `sha256:${text(run(["nix", "hash", "file", "--type", "sha256", "--base32", narPath]))}`;
      expect(text(run(["nix-hash", "--type", "sha256", "--flat", "--base32", narPath]))).toBe(narHash.slice(7));

      const files: [Compression, Uint8Array][] = [
        ["none", nar],
        ["xz", run(["xz", "-c", "-T1", narPath])],
        ["zstd", run(["zstd", "-c", "-q", narPath])],
      ];
      for (const [compression, file] of files) {
        const filePath = join(root, `x.nar.${compression}`);
        await Bun.write(filePath, file);
        const hex = text(run(["sha256sum", filePath])).split(/\s+/)[0] ?? "";
        const expectation: NarExpectation = {
          compression,
          fileSize: file.length,
          fileHash: `sha256:${hex}`,
          narSize: nar.length,
          narHash,
        };
        const digest = await verifyFile(expectation, file);
        expect(digest).toEqual({
          fileSize: file.length,
          fileHash: canonicalHash(`sha256:${hex}`),
          narSize: nar.length,
          narHash,
        });

        // A flipped bit anywhere: the FileHash catches it, and so do the decoder or NarHash
        // when FileHash is absent.
        for (const at of [0, file.length >> 1, file.length - 1]) {
          const bad = flipBit(file, at);
          // The decoder may notice first, at the write that carries the bad bytes.
          expect(await rejects(verifyFile(expectation, bad))).toMatch(/^(FileHash mismatch|\w+ stream is corrupt)/);
          expect(await rejects(verifyFile({ ...expectation, fileHash: null, fileSize: null }, bad))).toMatch(
            /^(NarHash mismatch|NarSize|\w+ stream is corrupt)/,
          );
        }
      }
    },
    60_000,
  );

  nixTest(
    "our NarHash of a path in a chroot store equals nix path-info's",
    async () => {
      const storePath = text(run(["nix-store", "--store", store, "--add", tree]));
      const [info] = JSON.parse(text(run(["nix", "path-info", "--store", store, "--json", storePath]))) as {
        narHash: string;
        narSize: number;
      }[];
      if (!info) throw new Error("nix path-info printed nothing");
      expect(info.narHash).toStartWith("sha256-"); // SRI, unlike narinfos

      const nar = run(["nix", "store", "dump-path", "--store", store, storePath]);
      const digest = await verifyFile(
        { compression: "none", narSize: info.narSize, narHash: formatHash(parseHash(info.narHash)) },
        nar,
      );
      expect(digest.narHash).toBe(canonicalHash(info.narHash));
      expect(digest.narSize).toBe(info.narSize);
      // The same tree dumped straight from disk is the same NAR.
      expect(digest.narHash).toBe(formatHash(sha256(run(["nix-store", "--dump", tree]))));
    },
    60_000,
  );
});

describe("binary caches written by nix copy", () => {
  for (const compression of ["xz", "zstd", "none", "br", "gzip", "bzip2"] as const) {
    nixTest(
      `compression=${compression}: the narinfo's URL, Compression and hashes verify the NAR it names`,
      async () => {
        const storePath = text(run(["nix-store", "--store", store, "--add", tree]));
        const cacheDir = join(root, `cache-${compression}`);
        run(["nix", "copy", "--store", store, "--to", `file://${cacheDir}?compression=${compression}`, storePath]);
        const hashPart = storePath.slice("/nix/store/".length, "/nix/store/".length + 32);
        const narInfo = parseNarInfo(await Bun.file(join(cacheDir, `${hashPart}.narinfo`)).text());

        const url = parseNarUrl(narInfo.url);
        const parsed = parseCompression(narInfo.compression);
        expect(parsed).toBe(compression);
        // Nix names gzip NARs without an extension; every other one carries it.
        expect(url.compression).toBe(compression === "none" || compression === "gzip" ? null : compression);
        expect(url.hash).not.toBeNull();
        expect(canonicalHash(`sha256:${url.hash}`)).toBe(canonicalHash(narInfo.fileHash ?? ""));

        const file = new Uint8Array(await Bun.file(join(cacheDir, url.path)).arrayBuffer());
        const expectation: NarExpectation = {
          compression: parsed,
          fileSize: narInfo.fileSize ?? null,
          fileHash: narInfo.fileHash ?? null,
          narSize: narInfo.narSize,
          narHash: narInfo.narHash,
        };
        const digest = await verifyFile(expectation, file);
        expect(digest.narHash).toBe(canonicalHash(narInfo.narHash));
        expect(digest.fileHash).toBe(canonicalHash(narInfo.fileHash ?? ""));
        expect(await rejects(verifyFile(expectation, flipBit(file, file.length >> 1)))).toMatch(
          /^(FileHash mismatch|\w+ stream is corrupt)/,
        );
        if (compression === "bzip2") {
          expect(await rejects(verifyFile({ ...expectation, fileHash: null }, file))).toBe(
            "cannot verify bzip2 NAR without FileHash",
          );
        }
      },
      60_000,
    );
  }
});
