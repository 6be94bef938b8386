/** src/nix against the real Nix: nix32 encoding, key formats, and the acceptance check that
 * Nix itself accepts narinfos signed by our code (and refuses a tampered signature). */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { randomBytes } from "node:crypto";
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { canonicalHash } from "../../src/nix/hash.ts";
import { parseNarInfo, serializeNarInfo } from "../../src/nix/narinfo.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import {
  formatPublicKey,
  formatSecretKey,
  generateSecretKey,
  parsePublicKey,
  parseSecretKey,
  signNarInfo,
  toPublicKey,
  verifyNarInfo,
} from "../../src/nix/signature.ts";
import { baseNixConf } from "../helpers/nix.ts";
import { hasCommand, testIf } from "../helpers/prereq.ts";

const nixTest = testIf(hasCommand("nix"), "the nix command is not installed (apt-get install nix-bin)");


// Two input-addressed paths, one referring to the other, built with /bin/sh (no nixpkgs).
const EXPR = `
let dep = builtins.derivation {
  name = "ncps-crosscheck-dep"; system = builtins.currentSystem; builder = "/bin/sh";
  args = ["-c" "echo dep > $out"]; PATH = "/usr/bin:/bin";
};
in builtins.derivation {
  name = "ncps-crosscheck"; system = builtins.currentSystem; builder = "/bin/sh";
  args = ["-c" "echo \${dep} > $out"]; PATH = "/usr/bin:/bin";
}`;

let root = "";
let runs = 0;

interface NixResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs nix with a private config and a fresh narinfo disk cache per call. */
function nix(args: string[], stdin?: string): NixResult {
  const env: Record<string, string> = { ...(process.env as Record<string, string>) };
  delete env.NIX_REMOTE;
  env.NIX_CONF_DIR = join(root, "conf");
  env.XDG_CONFIG_HOME = join(root, "xdg-config");
  env.XDG_CACHE_HOME = join(root, `xdg-cache-${runs++}`);
  const proc = Bun.spawnSync(["nix", ...args], { env, stdin: stdin === undefined ? "ignore" : Buffer.from(stdin) });
  return { exitCode: proc.exitCode ?? -1, stdout: proc.stdout.toString(), stderr: proc.stderr.toString() };
}

function nixOk(args: string[], stdin?: string): string {
  const result = nix(args, stdin);
  if (result.exitCode !== 0) throw new Error(`nix ${args.join(" ")} failed (${result.exitCode}): ${result.stderr}`);
  return result.stdout;
}

function makeWritable(path: string): void {
  const stat = lstatSync(path);
  if (stat.isSymbolicLink()) return;
  chmodSync(path, stat.mode | 0o200);
  if (stat.isDirectory()) for (const entry of readdirSync(path)) makeWritable(join(path, entry));
}

function flipBitInSig(sig: string): string {
  const colon = sig.indexOf(":");
  const bytes = Buffer.from(sig.slice(colon + 1), "base64");
  bytes[17]! ^= 0x04;
  return `${sig.slice(0, colon)}:${bytes.toString("base64")}`;
}

describe("cross-check with the real Nix", () => {
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), "ncps-nix-crosscheck-"));
    mkdirSync(join(root, "conf"));
    mkdirSync(join(root, "xdg-config"));
    writeFileSync(join(root, "conf", "nix.conf"), baseNixConf);
  });

  afterAll(() => {
    if (root === "") return;
    makeWritable(root); // store files and directories are read-only
    rmSync(root, { recursive: true, force: true });
  });

  nixTest("nix32 of 50 random sha256 digests equals `nix hash to-base32`", () => {
    const digests = Array.from({ length: 50 }, () => randomBytes(32));
    const theirs = nixOk(["hash", "to-base32", "--type", "sha256", ...digests.map((d) => d.toString("hex"))]).trim().split("\n");
    expect(theirs.length).toBe(50);
    expect(digests.map((d) => encodeNix32(d))).toEqual(theirs);
  });

  nixTest("nix32 of random sha1 and sha512 digests equals `nix hash to-base32`", () => {
    for (const [type, size] of [["sha1", 20], ["sha512", 64]] as const) {
      const digests = Array.from({ length: 10 }, () => randomBytes(size));
      const theirs = nixOk(["hash", "to-base32", "--type", type, ...digests.map((d) => d.toString("hex"))]).trim().split("\n");
      expect(digests.map((d) => encodeNix32(d))).toEqual(theirs);
    }
  });

  nixTest("a key from `nix key generate-secret` parses, and its public key matches Nix's", () => {
    const secretText = nixOk(["key", "generate-secret", "--key-name", "nix-made-1"]);
    const theirPublic = nixOk(["key", "convert-secret-to-public"], secretText).trim();
    const secret = parseSecretKey(secretText);
    expect(secret.name).toBe("nix-made-1");
    expect(formatSecretKey(secret)).toBe(secretText.trim());
    expect(formatPublicKey(toPublicKey(secret))).toBe(theirPublic);
    expect(parsePublicKey(theirPublic)).toEqual(toPublicKey(secret));
  });

  nixTest("a key from generateSecretKey is accepted by Nix", () => {
    const secret = generateSecretKey("ncps-made-1");
    const theirPublic = nixOk(["key", "convert-secret-to-public"], `${formatSecretKey(secret)}\n`).trim();
    expect(theirPublic).toBe(formatPublicKey(toPublicKey(secret)));
  });

  nixTest(
    "Nix substitutes narinfos signed by our code and refuses a tampered signature",
    () => {
      const upstream = join(root, "upstream-store");
      const cacheDir = join(root, "binary-cache");
      const cacheUrl = `file://${cacheDir}`;

      const built = JSON.parse(nixOk(["build", "--impure", "--store", upstream, "--expr", EXPR, "--no-link", "--json"])) as {
        outputs: { out: string };
      }[];
      const path = built[0]!.outputs.out;
      nixOk(["copy", "--store", upstream, "--to", cacheUrl, path]); // unsigned

      const secretText = nixOk(["key", "generate-secret", "--key-name", "crosscheck-1"]);
      const publicText = nixOk(["key", "convert-secret-to-public"], secretText).trim();
      const keyFile = join(root, "crosscheck.sk");
      writeFileSync(keyFile, secretText);
      const trust = ["--option", "trusted-public-keys", publicText, "--option", "require-sigs", "true"];
      const copyFrom = (client: string) => nix(["copy", "--from", cacheUrl, "--to", join(root, client), ...trust, path]);

      // Control: unsigned narinfos are refused, so the success below is due to our signatures.
      const unsigned = copyFrom("client-unsigned");
      expect(unsigned.exitCode).not.toBe(0);
      expect(unsigned.stderr).toContain("lacks a valid signature");

      // Re-sign every narinfo in the cache with our code.
      const key = parseSecretKey(secretText);
      const narinfoFiles = readdirSync(cacheDir).filter((f) => f.endsWith(".narinfo"));
      expect(narinfoFiles.length).toBe(2);
      for (const file of narinfoFiles) {
        const text = readFileSync(join(cacheDir, file), "utf8");
        const ni = parseNarInfo(text);
        expect(serializeNarInfo(ni)).toBe(text); // Nix's own output round-trips too
        const signed = signNarInfo(ni, key);
        expect(verifyNarInfo(signed, [toPublicKey(key)])).toBe(true);
        writeFileSync(join(cacheDir, file), serializeNarInfo(signed));
      }

      const accepted = copyFrom("client-signed");
      expect(accepted.stderr).not.toContain("error");
      expect(accepted.exitCode).toBe(0);
      const info = JSON.parse(nixOk(["path-info", "--store", join(root, "client-signed"), "--json", "--sigs", path])) as {
        narHash: string;
        signatures: string[];
      }[];
      const ours = parseNarInfo(readFileSync(join(cacheDir, `${path.slice(11, 43)}.narinfo`), "utf8"));
      expect(info[0]!.signatures).toEqual(ours.sigs);
      expect(canonicalHash(info[0]!.narHash)).toBe(canonicalHash(ours.narHash));

      // Nix signing the same path with the same key gives the same bytes (ed25519 is deterministic),
      // so our fingerprint is Nix's fingerprint.
      nixOk(["store", "sign", "--store", upstream, "--key-file", keyFile, path]);
      const nixSigned = JSON.parse(nixOk(["path-info", "--store", upstream, "--json", "--sigs", path])) as { signatures: string[] }[];
      expect(nixSigned[0]!.signatures).toEqual(ours.sigs);

      // Tamper with one bit of the top-level path's signature: Nix must refuse it.
      const topFile = join(cacheDir, `${path.slice(11, 43)}.narinfo`);
      const tampered = { ...ours, sigs: ours.sigs.map(flipBitInSig) };
      writeFileSync(topFile, serializeNarInfo(tampered));
      const refused = copyFrom("client-tampered");
      expect(refused.exitCode).not.toBe(0);
      expect(refused.stderr).toContain(`cannot add path '${path}' because it lacks a valid signature`);
      expect(nix(["path-info", "--store", join(root, "client-tampered"), path]).exitCode).not.toBe(0);
    },
    180_000,
  );
});

