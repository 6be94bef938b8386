/** Builds the typed Config from, in order of precedence: flags > config file > environment >
 * defaults. Deprecated spellings count at their source's level, below the current name
 * there (so `--upstream-cache` beats CACHE_UPSTREAM_URLS, and loses to --cache-upstream-url).
 * An empty value (flag `--x=`, `X=`, `x: ""`, `x: []`) counts as not set. */
import { existsSync } from "node:fs";
import { homedir, hostname, tmpdir } from "node:os";
import { errnoReason } from "../errors.ts";
import { ConfigError } from "./errors.ts";
import { defaultConfigFile, goOnlyOptions, optionByKey, options } from "./options.ts";
import type { Config, DefaultsContext, GoOnlyOption, OptionSpec } from "./options.ts";
import { parseBoolean, parseDuration, parseInteger, splitList, parseSize } from "./values.ts";
import { validateConfig } from "./validate.ts";

export { ConfigError, isUserFacing } from "./errors.ts";
export type { Config } from "./options.ts";

export interface LoadOptions {
  /** Receives one line per warning (deprecated names, unknown config-file keys).
   * Default: `ncps: warning: ...` on stderr. */
  warn?: (message: string) => void;
  /** Stand-ins for the machine (root or not, home, host name...), for tests. */
  system?: Partial<Omit<DefaultsContext, "env">>;
}

/** `args`: parsed flags keyed by flag name (citty's shape; see src/cli/flags.ts). Lists may
 * be arrays (repeated flags) or single strings. */
export async function loadConfig(
  args: Record<string, unknown>,
  env: Record<string, string | undefined> = process.env,
  opts: LoadOptions = {},
): Promise<Config> {
  const ctx = systemContext(env, opts.system);
  const warn = opts.warn ?? ((message: string) => process.stderr.write(`ncps: warning: ${message}\n`));
  const file = await readConfigFile(args, ctx, warn);
  const resolved: Partial<Config> = {};
  if (file) resolved.configFile = file.path;
  for (const spec of options) {
    if (spec.key === "configFile") continue;
    const value = resolveOption(spec, args, file, ctx, resolved, warn);
    if (value !== undefined) (resolved as Record<string, unknown>)[spec.key] = value;
  }
  for (const spec of goOnlyOptions) {
    const where = whereGoOnlyIsSet(spec, args, file, ctx.env);
    if (where) warn(`${where} (a Go ncps option) is ignored: ${spec.instead}`);
  }
  const config = resolved as Config;
  validateConfig(config);
  return config;
}

function systemContext(
  env: Record<string, string | undefined>,
  overrides: LoadOptions["system"] = {},
): DefaultsContext {
  return {
    env,
    isRoot: process.getuid?.() === 0,
    homeDir: env.HOME || homedir(),
    hostname: hostname(),
    tmpDir: env.TMPDIR?.replace(/(.)\/+$/, "$1") || tmpdir(),
    fileExists: (path) => existsSync(path),
    ...overrides,
  };
}

// --- where values come from ---------------------------------------------------------------

interface Candidate {
  /** How the user spelled it: `--flag`, `ENV_VAR` or `file.yaml: dotted.key`. */
  where: string;
  raw: unknown;
  /** Flags may repeat: a single-value option then takes the last one. */
  fromFlag?: boolean;
  /** The current spelling, when this one is deprecated. */
  insteadUse?: string;
}

interface ConfigFile {
  path: string;
  data: Record<string, unknown>;
}

function resolveOption(
  spec: OptionSpec,
  args: Record<string, unknown>,
  file: ConfigFile | undefined,
  ctx: DefaultsContext,
  resolved: Partial<Config>,
  warn: (message: string) => void,
): unknown {
  const candidates = candidatesFor(spec, args, file, ctx.env).filter((c) => !isEmpty(c.raw));
  const chosen = candidates[0];
  for (const c of candidates) {
    if (c.insteadUse === undefined) continue;
    warn(
      c === chosen
        ? `${c.where} is deprecated; use ${c.insteadUse}`
        : `${c.where} is deprecated (use ${c.insteadUse}) and ignored: ${chosen?.where} is set`,
    );
  }
  if (chosen) return coerce(spec, chosen);
  return typeof spec.default === "function" ? spec.default(ctx, resolved) : spec.default;
}

/** Every place the option may be set, highest precedence first. */
function candidatesFor(
  spec: OptionSpec,
  args: Record<string, unknown>,
  file: ConfigFile | undefined,
  env: Record<string, string | undefined>,
): Candidate[] {
  const flagName = `--${spec.flag}`;
  const candidates: Candidate[] = [{ where: flagName, raw: args[spec.flag] ?? args[spec.key], fromFlag: true }];
  for (const alias of spec.deprecated?.flags ?? []) {
    candidates.push({ where: `--${alias}`, raw: args[alias], insteadUse: flagName, fromFlag: true });
  }
  if (file && spec.configKey) {
    candidates.push({ where: `${file.path}: ${spec.configKey}`, raw: lookup(file.data, spec.configKey) });
    for (const alias of spec.deprecated?.configKeys ?? []) {
      candidates.push({ where: `${file.path}: ${alias}`, raw: lookup(file.data, alias), insteadUse: spec.configKey });
    }
  }
  for (const name of spec.env) candidates.push({ where: name, raw: env[name] });
  for (const name of spec.deprecated?.env ?? []) {
    candidates.push({ where: name, raw: env[name], insteadUse: spec.env[0] });
  }
  return candidates;
}

/** Where a Go-only option is set, first by precedence; undefined when it is not. */
function whereGoOnlyIsSet(
  spec: GoOnlyOption,
  args: Record<string, unknown>,
  file: ConfigFile | undefined,
  env: Record<string, string | undefined>,
): string | undefined {
  if (!isEmpty(args[spec.flag])) return `--${spec.flag}`;
  if (file && spec.configKey && !isEmpty(lookup(file.data, spec.configKey))) return `${file.path}: ${spec.configKey}`;
  return spec.env.find((name) => !isEmpty(env[name]));
}

function isEmpty(raw: unknown): boolean {
  return raw === undefined || raw === null || raw === "" || (Array.isArray(raw) && raw.length === 0);
}

/** The raw value (a flag's string, an env var, or whatever YAML/TOML/JSON gave) as the
 * option's type. */
function coerce(spec: OptionSpec, { raw, where, fromFlag }: Candidate): unknown {
  const wrongShape = (expected: string) =>
    new ConfigError(`${where}: expected ${expected}, got ${JSON.stringify(raw)}`);
  const scalar = (value: unknown): string => {
    if (Array.isArray(value) && fromFlag) value = value[value.length - 1];
    if (typeof value === "string") return value;
    if (typeof value === "number" || typeof value === "boolean") return String(value);
    throw wrongShape(`a ${spec.type}`);
  };
  try {
    switch (spec.type) {
      case "string": {
        const text = scalar(raw);
        if (!spec.choices) return text;
        const lower = text.trim().toLowerCase();
        return spec.choiceAliases?.[lower] ?? lower;
      }
      case "string[]": {
        const items = Array.isArray(raw) ? raw : [raw];
        return items.flatMap((item) => {
          if (typeof item !== "string") throw wrongShape("a list of strings");
          return splitList(item);
        });
      }
      case "boolean":
        return typeof raw === "boolean" ? raw : parseBoolean(scalar(raw));
      case "integer":
        return parseInteger(scalar(raw));
      case "duration":
        // A bare number is refused: seconds or nanoseconds? Go would read nanoseconds.
        if (typeof raw === "number" && raw !== 0) throw wrongShape('a duration string like "3s"');
        return parseDuration(scalar(raw));
      case "size":
        return typeof raw === "number" && Number.isSafeInteger(raw) && raw >= 0 ? raw : parseSize(scalar(raw));
    }
  } catch (err) {
    if (err instanceof ConfigError && !err.message.startsWith(where)) {
      throw new ConfigError(`${where}: ${err.message}`);
    }
    throw err;
  }
}

// --- the config file ----------------------------------------------------------------------

async function readConfigFile(
  args: Record<string, unknown>,
  ctx: DefaultsContext,
  warn: (message: string) => void,
): Promise<ConfigFile | undefined> {
  const spec = optionByKey("configFile");
  const named = [args[spec.flag], args[spec.key], ...spec.env.map((name) => ctx.env[name])].find(
    (value): value is string => typeof value === "string" && value !== "",
  );
  const path = named ?? defaultConfigFile(ctx);
  if (!ctx.fileExists(path)) {
    if (named !== undefined) throw new ConfigError(`config file not found: ${path}`);
    return undefined;
  }
  let text: string;
  try {
    text = await Bun.file(path).text();
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${errnoReason(err)}`);
  }
  const data = parseConfigText(path, text);
  const unknown = unknownKeys(data);
  // Warn, not fail: a Go ncps config file carries keys for features this version lacks
  // (analytics, storage.s3, lru...) and must still load.
  if (unknown.length > 0) warn(`${path}: ignoring unknown keys: ${unknown.join(", ")}`);
  return { path, data };
}

export function parseConfigText(path: string, text: string): Record<string, unknown> {
  const extension = path.slice(path.lastIndexOf(".") + 1).toLowerCase();
  let data: unknown;
  try {
    if (extension === "yaml" || extension === "yml") data = Bun.YAML.parse(text);
    else if (extension === "toml") data = Bun.TOML.parse(text);
    else if (extension === "json") data = JSON.parse(text);
    else throw new ConfigError(`config file ${path}: unknown format (name it .yaml, .yml, .toml or .json)`);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`config file ${path}: ${(err as Error).message}`);
  }
  if (data === null || data === undefined) return {}; // an empty YAML file
  if (!isPlainObject(data)) throw new ConfigError(`config file ${path}: expected a mapping of keys at the top`);
  return data;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `cache.upstream.urls` in `{ cache: { upstream: { urls: [...] } } }`. */
function lookup(data: Record<string, unknown>, dottedKey: string): unknown {
  let node: unknown = data;
  for (const part of dottedKey.split(".")) {
    if (!isPlainObject(node)) return undefined;
    node = node[part];
  }
  return node;
}

const knownConfigKeys: ReadonlySet<string> = new Set([
  ...options.flatMap((o) => [...(o.configKey ? [o.configKey] : []), ...(o.deprecated?.configKeys ?? [])]),
  ...goOnlyOptions.flatMap((o) => (o.configKey ? [o.configKey] : [])),
]);

function unknownKeys(data: Record<string, unknown>, prefix = ""): string[] {
  const found: string[] = [];
  for (const [name, value] of Object.entries(data)) {
    const path = prefix + name;
    if (knownConfigKeys.has(path)) continue;
    const isParentOfKnown = [...knownConfigKeys].some((key) => key.startsWith(`${path}.`));
    if (isParentOfKnown && isPlainObject(value)) found.push(...unknownKeys(value, `${path}.`));
    else found.push(path);
  }
  return found;
}
