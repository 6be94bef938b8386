/** The real Nix client (2.8, root, no daemon) for tests: private config, chroot stores,
 * signing keys, store paths with real references, binary caches made by Nix itself, and
 * substitution from a URL into a fresh store. See /work/shared/NIX-CLIENT-NOTES.md. */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { isAbsolute, join } from "node:path";

export const nixAvailable: boolean = Bun.which("nix") !== null && Bun.which("nix-store") !== null;

/** Debian's defaults point at cache.nixos.org and trust its key: every test must start from
 * nothing. TTLs of 0 stop the narinfo disk cache from answering instead of the server. */
export const baseNixConf = `build-users-group =
sandbox = false
sandbox-paths = /bin /usr /lib /lib64
experimental-features = nix-command
substituters =
trusted-substituters =
trusted-public-keys =
require-sigs = true
narinfo-cache-negative-ttl = 0
narinfo-cache-positive-ttl = 0
connect-timeout = 5
stalled-download-timeout = 60
download-attempts = 2
fallback = false
`;

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to the process's stdin. */
  input?: string;
  /** Return a non-zero exit instead of throwing. */
  allowFail?: boolean;
  /** nix.conf lines added (later lines win) for this call only. */
  extraConf?: string;
  /** Kill the process after this long; the result then has code 137 (or it throws). */
  timeoutMs?: number;
}

export interface NixEnv {
  /** Fresh temp directory holding config, stores, keys and caches of this environment. */
  root: string;
  /** The environment every Nix call gets (NIX_REMOTE unset, private NIX_CONF_DIR and XDG
   * dirs); spawn Nix yourself with it if run() does not fit. */
  env: Record<string, string>;
  /** Runs args[0] (e.g. "nix", "nix-store") with args[1..]; each call gets a fresh
   * XDG_CACHE_HOME so no narinfo disk cache survives between client runs. */
  run(args: string[], opts?: RunOptions): Promise<RunResult>;
  /** Root directory of a chroot store under root (logical store dir stays /nix/store). */
  store(name: string): string;
  cleanup(): Promise<void>;
}

export async function createNixEnv(): Promise<NixEnv> {
  const root = await mkdtemp(join(tmpdir(), "ncps-nix-"));
  const confDir = join(root, "conf");
  const dirs = {
    home: join(root, "home"),
    xdgConfig: join(root, "xdg-config"),
    xdgCache: join(root, "xdg-cache"),
    xdgData: join(root, "xdg-data"),
    xdgState: join(root, "xdg-state"),
    tmp: join(root, "tmp"),
  };
  await Promise.all([confDir, ...Object.values(dirs)].map((d) => mkdir(d, { recursive: true })));
  await writeFile(join(confDir, "nix.conf"), baseNixConf);

  // Built from scratch rather than from process.env, so NIX_REMOTE, NIX_PATH and friends
  // from the outside never reach the client.
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
    HOME: dirs.home,
    NIX_CONF_DIR: confDir,
    XDG_CONFIG_HOME: dirs.xdgConfig,
    XDG_CACHE_HOME: dirs.xdgCache,
    XDG_DATA_HOME: dirs.xdgData,
    XDG_STATE_HOME: dirs.xdgState,
    TMPDIR: dirs.tmp,
    LANG: "C.UTF-8",
  };

  let runCount = 0;

  async function run(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    const n = ++runCount;
    const cacheHome = join(root, "xdg-cache-runs", String(n));
    await mkdir(cacheHome, { recursive: true });
    const callEnv: Record<string, string> = { ...env, XDG_CACHE_HOME: cacheHome };
    if (opts.extraConf !== undefined) {
      const extraConfDir = join(root, "conf-runs", String(n));
      await mkdir(extraConfDir, { recursive: true });
      await writeFile(join(extraConfDir, "nix.conf"), `${baseNixConf}${opts.extraConf}\n`);
      callEnv.NIX_CONF_DIR = extraConfDir;
    }
    const proc = Bun.spawn(args, {
      env: callEnv,
      cwd: root,
      stdin: opts.input === undefined ? "ignore" : new TextEncoder().encode(opts.input),
      stdout: "pipe",
      stderr: "pipe",
    });
    const timer =
      opts.timeoutMs === undefined ? undefined : setTimeout(() => proc.kill("SIGKILL"), opts.timeoutMs);
    const [stdout, stderr, code] = await Promise.all([
      new Response(proc.stdout).text(),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    clearTimeout(timer);
    if (code !== 0 && !opts.allowFail) {
      throw new Error(`${args.join(" ")} exited with ${code}:\n${stderr.slice(-4000)}`);
    }
    return { code, stdout, stderr };
  }

  return {
    root,
    env,
    run,
    store: (name: string) => join(root, "stores", name),
    async cleanup() {
      // Store files and directories are read-only; rm needs write permission on them.
      Bun.spawnSync(["chmod", "-R", "u+w", root]);
      await rm(root, { recursive: true, force: true });
    },
  };
}

export interface KeyPair {
  name: string;
  secretKeyFile: string;
  /** "name:base64", as in a secret key file. */
  secretKey: string;
  /** "name:base64", as in trusted-public-keys. */
  publicKey: string;
}

/** Not `nix-store --generate-binary-cache-key`: it creates /nix/store as a side effect. */
export async function makeKeyPair(nix: NixEnv, name: string): Promise<KeyPair> {
  const secretKey = (await nix.run(["nix", "key", "generate-secret", "--key-name", name])).stdout.trim();
  const publicKey = (
    await nix.run(["nix", "key", "convert-secret-to-public"], { input: secretKey })
  ).stdout.trim();
  const keyDir = join(nix.root, "keys");
  await mkdir(keyDir, { recursive: true });
  const secretKeyFile = join(keyDir, `${name}.sk`);
  await writeFile(secretKeyFile, secretKey, { mode: 0o600 });
  return { name, secretKeyFile, secretKey, publicKey };
}

export interface BuiltClosure {
  /** Full store paths of the whole closure of `top`, dependencies first. */
  paths: string[];
  top: string;
  /** The path holding the random blob, when bigBytes was given. */
  big?: string;
}

/** "/nix/store/<hash>-name" -> "<hash>", the part URLs use. */
export function storePathHash(path: string): string {
  const base = path.slice(path.lastIndexOf("/") + 1);
  return base.slice(0, 32);
}

/** Store path names allow only these characters; seeds may come from test names. */
function nameSafe(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 40);
}

function nixString(s: string): string {
  return JSON.stringify(s).replace(/\$\{/g, "\\${");
}

/** Builder script of the ordinary paths: a directory with a text file, the dependency paths
 * written out (so Nix finds them as References), a symlink and an executable, so the NARs
 * have every entry type. */
const smallPathScript = [
  "set -e",
  "mkdir -p $out/bin $out/share",
  'echo "$name $seed" > $out/share/info',
  "for d in $deps; do echo $d >> $out/share/refs; done",
  'for d in $deps; do ln -s $d $out/dep; break; done',
  "printf '#!/bin/sh\\necho %s\\n' \"$name\" > $out/bin/hello",
  "chmod +x $out/bin/hello",
].join("\n");

/**
 * Builds `count` input-addressed paths in `store`: p0 <- p1 <- ... <- p(count-1) is a chain,
 * and each p(i >= 2) also references p(floor((i-1)/2)), so low paths have several referrers
 * (fan-in). The top path references all earlier ones through the chain, plus `big` (a
 * directory with a `blob` of bigBytes random bytes) when asked. One path name carries `+`
 * and `=` (legal in store names) so URL and name handling gets exercised.
 */
export async function buildClosure(
  nix: NixEnv,
  store: string,
  opts: {
    count: number;
    bigBytes?: number;
    seed?: string;
    /** the big blob's bytes: random (default), or the host's /usr/bin files (compressible,
     * as most store paths are; at most their total size) */
    bigFrom?: "random" | "usr-bin";
  },
): Promise<BuiltClosure> {
  if (!Number.isInteger(opts.count) || opts.count < 1) throw new Error("count must be >= 1");
  const seed = opts.seed ?? crypto.randomUUID();
  const tag = nameSafe(seed);
  const derivation = (name: string, script: string, deps: string[]) =>
    `builtins.derivation {
    name = ${nixString(name)};
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    seed = ${nixString(seed)};
    deps = [ ${deps.join(" ")} ];
    args = [ "-c" ${nixString(script)} ];
  }`;

  const bindings: string[] = [];
  if (opts.bigBytes !== undefined) {
    const source = opts.bigFrom === "usr-bin" ? "cat /usr/bin/* 2>/dev/null" : "cat /dev/urandom";
    const bigScript = `set -e\nmkdir $out\n(${source}) | head -c ${opts.bigBytes} > $out/blob`;
    bindings.push(`big = ${derivation(`ncps-big-${tag}`, bigScript, [])};`);
  }
  for (let i = 0; i < opts.count; i++) {
    const deps: string[] = [];
    if (i >= 1) deps.push(`p${i - 1}`);
    const fanIn = Math.floor((i - 1) / 2);
    if (i >= 2 && fanIn !== i - 1) deps.push(`p${fanIn}`);
    if (i === opts.count - 1 && opts.bigBytes !== undefined) deps.push("big");
    const name = i === 1 ? `ncps-p1+x=y-${tag}` : `ncps-p${i}-${tag}`;
    bindings.push(`p${i} = ${derivation(name, smallPathScript, deps)};`);
  }
  const expr = `let\n  ${bindings.join("\n  ")}\nin {\n  top = p${opts.count - 1};${
    opts.bigBytes !== undefined ? "\n  big = big;" : ""
  }\n}\n`;

  const exprDir = join(nix.root, "exprs");
  await mkdir(exprDir, { recursive: true });
  const exprFile = join(exprDir, `closure-${tag}-${crypto.randomUUID()}.nix`);
  await writeFile(exprFile, expr);

  const attrs = opts.bigBytes !== undefined ? ["-A", "top", "-A", "big"] : ["-A", "top"];
  const built = await nix.run([
    "nix-build", "--store", store, "--no-out-link", "--max-jobs", "2", exprFile, ...attrs,
  ]);
  const outputs = built.stdout.trim().split("\n");
  const top = outputs[0];
  if (top === undefined || !top.startsWith("/nix/store/")) {
    throw new Error(`nix-build printed no output path:\n${built.stdout}\n${built.stderr}`);
  }
  // `nix-store -qR` prints the closure in dependency order (referenced paths first).
  const closure = await nix.run(["nix-store", "--store", store, "--query", "--requisites", top]);
  const paths = closure.stdout.trim().split("\n");
  const expected = opts.count + (opts.bigBytes !== undefined ? 1 : 0);
  if (paths.length !== expected || paths[paths.length - 1] !== top) {
    throw new Error(`closure of ${top} has ${paths.length} paths, expected ${expected}`);
  }
  const result: BuiltClosure = { paths, top };
  if (opts.bigBytes !== undefined) result.big = outputs[1];
  return result;
}

/** Signs the closure of `paths` in `store` with `key`, then lets Nix write a `file://`
 * binary cache (narinfos, nar/, nix-cache-info) into `dir`. */
export async function publishCache(
  nix: NixEnv,
  store: string,
  paths: string[],
  dir: string,
  opts: { compression: "xz" | "zstd" | "none"; key: KeyPair },
): Promise<void> {
  if (!isAbsolute(dir)) throw new Error(`cache dir must be absolute: ${dir}`);
  await nix.run([
    "nix", "store", "sign", "--store", store, "--key-file", opts.key.secretKeyFile, "--recursive", ...paths,
  ]);
  await nix.run([
    "nix", "copy", "--store", store, "--to", `file://${dir}?compression=${opts.compression}`, ...paths,
  ]);
}

/**
 * Substitutes `paths` from the binary cache at `from` into the chroot store `store`, trusting
 * only `trustedKeys` (signatures are required). "copy" runs `nix copy --from`, "realise" runs
 * `nix-store --realise` with the URL as the only substituter.
 */
export async function substitute(
  nix: NixEnv,
  opts: {
    from: string;
    paths: string[];
    trustedKeys: string[];
    store: string;
    mode?: "copy" | "realise";
    timeoutMs?: number;
  },
): Promise<{ code: number; stderr: string }> {
  const trust = ["--option", "trusted-public-keys", opts.trustedKeys.join(" ")];
  const args =
    (opts.mode ?? "copy") === "copy"
      ? ["nix", "copy", "--from", opts.from, "--to", opts.store, ...trust, "--option", "substituters", "", ...opts.paths]
      : ["nix-store", "--store", opts.store, "--realise", ...opts.paths, "--option", "substituters", opts.from, ...trust];
  const runOpts: RunOptions = { allowFail: true };
  if (opts.timeoutMs !== undefined) runOpts.timeoutMs = opts.timeoutMs;
  const { code, stderr } = await nix.run(args, runOpts);
  return { code, stderr };
}

/**
 * Throws unless every path (and its closure) is valid in `store` with contents matching the
 * recorded NAR hash; with trustedKeys, each must also carry a valid signature by one of them.
 */
export async function verifyStore(
  nix: NixEnv,
  store: string,
  paths: string[],
  trustedKeys?: string[],
): Promise<void> {
  const trust =
    trustedKeys === undefined
      ? ["--no-trust"]
      : ["--option", "trusted-public-keys", trustedKeys.join(" "), "--sigs-needed", "1"];
  // Validity first: its error names the missing path plainly.
  await nix.run(["nix-store", "--store", store, "--check-validity", ...paths]);
  await nix.run(["nix", "store", "verify", "--store", store, "--recursive", ...trust, ...paths]);
}

/** nix.conf lines for content-addressed derivations (`experimental-features` replaced, as
 * later lines win). */
export const caDerivationsConf = "experimental-features = nix-command ca-derivations";

export interface BuiltCaClosure {
  /** the expression file: `nix-build <file>` builds (or substitutes) the top derivation */
  exprFile: string;
  /** output store paths, dependency first, then the top */
  paths: string[];
  /** the realisation ids (`sha256:<hex>!out`), in the order of `paths` */
  ids: string[];
}

/** Builds two content-addressed derivations in `store` (`dep` and `top`, whose output names
 * dep's), signing their realisations with `key` (Nix signs them as it builds, with
 * secret-key-files), and returns their outputs and realisation ids. */
export async function buildCaClosure(nix: NixEnv, store: string, opts: { key: KeyPair; seed?: string }): Promise<BuiltCaClosure> {
  const seed = opts.seed ?? crypto.randomUUID();
  const tag = nameSafe(seed);
  const derivation = (name: string, script: string, deps: string) => `builtins.derivation {
    name = ${nixString(name)};
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    seed = ${nixString(seed)};
    __contentAddressed = true;
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    ${deps}
    args = [ "-c" ${nixString(script)} ];
  }`;
  const expr = `let
  dep = ${derivation(`ncps-ca-dep-${tag}`, 'mkdir $out; echo "$seed" > $out/seed', "")};
in ${derivation(`ncps-ca-top-${tag}`, "mkdir $out; echo $dep > $out/dep", "inherit dep;")}
`;
  const exprDir = join(nix.root, "exprs");
  await mkdir(exprDir, { recursive: true });
  const exprFile = join(exprDir, `ca-${tag}-${crypto.randomUUID()}.nix`);
  await writeFile(exprFile, expr);
  const conf = { extraConf: `${caDerivationsConf}\nsecret-key-files = ${opts.key.secretKeyFile}` };
  await nix.run(["nix-build", "--store", store, "--no-out-link", exprFile], conf);
  const info = await nix.run(["nix", "realisation", "info", "--store", store, "--file", exprFile, "--json"], conf);
  const [top] = JSON.parse(info.stdout) as { id: string; outPath: string; dependentRealisations: Record<string, string> }[];
  if (!top) throw new Error(`no realisation for ${exprFile}:\n${info.stdout}`);
  const [depId, depPath] = Object.entries(top.dependentRealisations)[0] ?? [];
  if (!depId || !depPath) throw new Error(`the top realisation names no dependency:\n${info.stdout}`);
  return { exprFile, paths: [`/nix/store/${depPath}`, `/nix/store/${top.outPath}`], ids: [depId, top.id] };
}
