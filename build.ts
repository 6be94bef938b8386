#!/usr/bin/env bun
/** `bun run build [--all]`: compiles ncps into one executable per platform,
 * dist/ncps-<os>-<arch>, and writes dist/SHA256SUMS for them (the file install.sh checks).
 *
 * The host's platform is always built (Bun has its runtime on this machine); `--all` builds
 * linux-x64 and linux-arm64, the other's runtime downloaded by Bun from the npm registry.
 * Migrations are static text imports (src/db/migrations.ts) and the xz decoder is WebAssembly
 * held in a module (src/nix/xz-embedded-wasm.ts), so the bundler embeds both: the binary
 * writes nothing to $TMPDIR and executes nothing from it. */
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";

const ROOT = import.meta.dir;
const DIST = join(ROOT, "dist");

export interface Platform {
  os: "linux";
  arch: "x64" | "arm64";
}

export const allPlatforms: Platform[] = [
  { os: "linux", arch: "x64" },
  { os: "linux", arch: "arm64" },
];
/** The platform this machine runs: always built, from the runtime Bun already has. */
export const hostPlatform: Platform = { os: "linux", arch: process.arch === "arm64" ? "arm64" : "x64" };

export function binaryName(p: Platform): string {
  return `ncps-${p.os}-${p.arch}`;
}

async function packageVersion(): Promise<string> {
  const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { version: string };
  return pkg.version;
}

/** The commit being built; "unknown" outside a git checkout (a source tarball). A tree with
 * uncommitted changes says so, so a binary never claims a commit it was not built from. */
function gitCommit(): string {
  const run = (args: string[]) => Bun.spawnSync(["git", ...args], { cwd: ROOT, stdout: "pipe", stderr: "ignore" });
  const head = run(["rev-parse", "--short=12", "HEAD"]);
  if (head.exitCode !== 0) return "unknown";
  const sha = head.stdout.toString().trim();
  const dirty = run(["status", "--porcelain", "--untracked-files=no"]).stdout.toString().trim() !== "";
  return dirty ? `${sha}-dirty` : sha;
}

export interface Stamp {
  version: string;
  commit: string;
}

/** The OTLP/gRPC exporters reach grpc-js through a require() made at run time
 * (`__require("@grpc/grpc-js")`), which a compiled binary, having no node_modules, cannot
 * resolve: every export failed and nothing reached the collector. This makes those requires
 * the bundled module. */
const grpcRequiredStatically: import("bun").BunPlugin = {
  name: "grpc-js required statically",
  setup(build) {
    build.onLoad({ filter: /[\\/]otlp-grpc-exporter-base[\\/]dist[\\/].*\.mjs$/ }, async ({ path }) => {
      const text = await Bun.file(path).text();
      if (!text.includes('__require("@grpc/grpc-js")')) return undefined;
      return { contents: `import * as __grpcJs from "@grpc/grpc-js";\n${text.replaceAll('__require("@grpc/grpc-js")', "__grpcJs")}`, loader: "js" };
    });
  },
};

/** Every platform compiles from these sources: the bundle is plain JavaScript and
 * WebAssembly (the xz decoder is wasm embedded as text, src/nix/xz-embedded-wasm.ts), with no
 * native addon, so nothing per-platform is installed and nothing is unpacked at run time. */
async function compile(p: Platform, stamp: Stamp, outDir: string): Promise<string> {
  const outfile = join(outDir, binaryName(p));
  const result = await Bun.build({
    // The verification thread is a Worker: a compiled binary holds its entrypoint beside the
    // main one (src/worker-entry.ts finds it there). The OTLP exporter is `ncps __otlp-exporter`.
    entrypoints: [join(ROOT, "src/main.ts"), join(ROOT, "src/cache/verify-worker.ts")],
    target: "bun",
    format: "esm",
    plugins: [grpcRequiredStatically],
    minify: true,
    sourcemap: "none",
    bytecode: true,
    define: {
      NCPS_VERSION: JSON.stringify(stamp.version),
      NCPS_COMMIT: JSON.stringify(stamp.commit),
    },
    compile: {
      target: `bun-${p.os}-${p.arch}`,
      outfile,
      // A service must not change behaviour with the .env or bunfig.toml of its working directory.
      autoloadDotenv: false,
      autoloadBunfig: false,
    },
  });
  if (!result.success) {
    const reasons = result.logs.map((log) => String(log)).join("\n");
    throw new Error(`building ${binaryName(p)} failed:\n${reasons}`);
  }
  return outfile;
}

/** `sha256sum` format: "<hex>  <name>", one line per file, so `sha256sum -c` reads it too. */
async function writeChecksums(files: string[], outDir: string): Promise<string> {
  const lines: string[] = [];
  for (const file of files) {
    const digest = createHash("sha256").update(await readFile(file)).digest("hex");
    lines.push(`${digest}  ${basename(file)}`);
  }
  const path = join(outDir, "SHA256SUMS");
  await writeFile(path, `${lines.join("\n")}\n`);
  return path;
}

export interface BuildResult {
  stamp: Stamp;
  binaries: string[];
  checksums: string;
}

/** Builds `platforms` into `outDir` (emptied first): what `bun run build` does into dist/,
 * and what the tests do into a temp directory. */
export async function build(opts: {
  outDir: string;
  platforms?: Platform[];
  log?: (line: string) => void;
}): Promise<BuildResult> {
  const platforms = opts.platforms ?? [hostPlatform];
  const log = opts.log ?? (() => {});
  const stamp = { version: await packageVersion(), commit: gitCommit() };
  await rm(opts.outDir, { recursive: true, force: true });
  await mkdir(opts.outDir, { recursive: true });
  const binaries: string[] = [];
  for (const p of platforms) {
    const started = performance.now();
    const binary = await compile(p, stamp, opts.outDir);
    binaries.push(binary);
    const seconds = (performance.now() - started) / 1000;
    log(`${binaryName(p)} ${stamp.version} (${stamp.commit}) ${(Bun.file(binary).size / 1e6).toFixed(1)} MB in ${seconds.toFixed(1)} s`);
  }
  const checksums = await writeChecksums(binaries, opts.outDir);
  return { stamp, binaries, checksums };
}

async function main(argv: string[]): Promise<number> {
  const unknown = argv.filter((a) => a !== "--all");
  if (unknown.length > 0) {
    process.stderr.write(`build: unknown argument ${unknown[0]} (usage: bun run build [--all])\n`);
    return 2;
  }
  const platforms = argv.includes("--all") ? allPlatforms : [hostPlatform];
  await build({ outDir: DIST, platforms, log: (line) => process.stderr.write(`build: ${line}\n`) });
  process.stderr.write("build: wrote dist/SHA256SUMS\n");
  return 0;
}

if (import.meta.main) {
  try {
    process.exitCode = await main(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`build: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
