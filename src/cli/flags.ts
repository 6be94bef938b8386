/** Command-line flags from the option table: the strict parser and the citty argument
 * definitions that render `--help`.
 *
 * Why not citty's own parser: citty 0.2 keeps only the last of a repeated flag (so
 * `--cache-upstream-url a --cache-upstream-url b` would lose `a`) and accepts unknown flags
 * silently. This parser keeps citty's output shape (values keyed by flag name), so
 * loadConfig reads either. */
import type { ArgsDef } from "citty";
import { ConfigError } from "../config/errors.ts";
import { describeDefault, goOnlyOptions, options } from "../config/options.ts";
import type { OptionSpec, OptionType } from "../config/options.ts";
import { parseBoolean } from "../config/values.ts";

export interface FlagSpec {
  /** Long name without dashes. */
  name: string;
  type: OptionType;
  help: string;
  /** Shown in --help as the value's placeholder. */
  valueHint?: string;
  /** The current name, when this one is a deprecated alias. */
  deprecatedFor?: string;
  default?: string;
  /** Accepted but left out of `--help` (a Go ncps name this command does not offer). */
  hidden?: boolean;
}

/** The flags an option answers to: its name, then its deprecated aliases. */
export function flagSpecsOf(options: readonly OptionSpec[]): FlagSpec[] {
  return options.flatMap((o) => {
    const current: FlagSpec = {
      name: o.flag,
      type: o.type,
      help: describeOption(o),
      valueHint: valueHintOf(o),
      default: describeDefault(o),
    };
    const aliases = (o.deprecated?.flags ?? []).map(
      (alias): FlagSpec => ({
        name: alias,
        type: o.type,
        help: `Deprecated: use --${o.flag}`,
        valueHint: valueHintOf(o),
        deprecatedFor: o.flag,
      }),
    );
    return [current, ...aliases];
  });
}

/** `offered`, plus, hidden, every other name the Go ncps accepts anywhere: the option table's
 * flags (every command reads every option from file and environment anyway) and the Go-only
 * ones (src/config/options.ts goOnlyOptions, a warning when set). A Go ncps command line
 * then never stops at an unknown option. */
export function withGoNames(offered: readonly FlagSpec[]): FlagSpec[] {
  const names = new Set(offered.map((f) => f.name));
  const others = [
    ...flagSpecsOf(options),
    ...goOnlyOptions.map((o): FlagSpec => ({ name: o.flag, type: o.type, help: `Go ncps option, ignored: ${o.instead}` })),
  ].filter((f) => !names.has(f.name));
  return [...offered, ...others.map((f) => ({ ...f, hidden: true }))];
}

function describeOption(o: OptionSpec): string {
  const sources = [`env ${o.env.join(", ")}`, ...(o.configKey ? [`config ${o.configKey}`] : [])];
  return `${o.help} [${sources.join("; ")}]`;
}

function valueHintOf(o: OptionSpec): string | undefined {
  if (o.choices) return o.choices.join("|");
  switch (o.type) {
    case "boolean":
      return undefined;
    case "duration":
      return "duration";
    case "size":
      return "size";
    case "integer":
      return "n";
    default:
      return /url/i.test(o.flag) ? "url" : /path|file|config|local/.test(o.flag) ? "path" : "value";
  }
}

/** citty argument definitions, used to render help. Defaults go into the description, not
 * citty's `default`, so an unset flag stays unset and cannot shadow the file or env. */
export function cittyArgs(flags: readonly FlagSpec[]): ArgsDef {
  const args: ArgsDef = {};
  for (const f of flags) {
    if (f.hidden) continue;
    const defaultNote = f.default ? ` (default: ${f.default})` : "";
    const description = f.help + defaultNote;
    args[f.name] =
      f.type === "boolean"
        ? { type: "boolean", description, negativeDescription: f.default === "true" ? `Turn off --${f.name}` : undefined }
        : { type: "string", description, valueHint: f.valueHint };
  }
  return args;
}

export interface ParsedFlags {
  /** Keyed by the flag name as typed (a deprecated alias keeps its own name): strings,
   * booleans, and arrays for list options. */
  values: Record<string, unknown>;
  positionals: string[];
}

/** Parses `--name value`, `--name=value`, `--flag`, `--no-flag`, `--flag=false`; list flags
 * may repeat; `--` ends the flags. Unknown flags are an error. `command` names the command
 * in messages ("ncps serve"). */
export function parseFlags(tokens: readonly string[], flags: readonly FlagSpec[], command: string): ParsedFlags {
  const byName = new Map(flags.map((f) => [f.name, f]));
  const values: Record<string, unknown> = {};
  const positionals: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i] ?? "";
    if (token === "--") {
      positionals.push(...tokens.slice(i + 1));
      break;
    }
    if (!token.startsWith("-") || token === "-") {
      positionals.push(token);
      continue;
    }
    const { name, inline } = splitFlag(token);
    const spec = byName.get(name);
    if (!spec) {
      const negated = name.startsWith("no-") ? byName.get(name.slice(3)) : undefined;
      if (negated?.type === "boolean" && inline === undefined) {
        values[negated.name] = false;
        continue;
      }
      throw new ConfigError(`unknown option ${token.split("=")[0]} for ${command} (see ${command} --help)`);
    }
    if (spec.type === "boolean") {
      values[name] = inline === undefined ? true : parseFlagBoolean(name, inline);
      continue;
    }
    const value = inline ?? tokens[i + 1];
    if (value === undefined || (inline === undefined && value.startsWith("--"))) {
      throw new ConfigError(`option --${name} needs a value`);
    }
    if (inline === undefined) i++;
    if (spec.type === "string[]") values[name] = [...((values[name] as string[] | undefined) ?? []), value];
    else values[name] = value; // a repeated single-value flag: the last one wins
  }
  return { values, positionals };
}

/** Whether the token at hand consumes the next one as its value (for walking to the
 * subcommand without parsing). */
export function takesValue(token: string, flags: readonly FlagSpec[]): boolean {
  if (!token.startsWith("--") || token.includes("=")) return false;
  const spec = flags.find((f) => f.name === token.slice(2));
  return spec !== undefined && spec.type !== "boolean";
}

export function isKnownFlag(token: string, flags: readonly FlagSpec[]): boolean {
  const { name } = splitFlag(token);
  return flags.some(
    (f) => f.name === name || (f.type === "boolean" && name === `no-${f.name}`),
  );
}

function splitFlag(token: string): { name: string; inline: string | undefined } {
  const body = token.replace(/^--?/, "");
  const eq = body.indexOf("=");
  return eq < 0 ? { name: body, inline: undefined } : { name: body.slice(0, eq), inline: body.slice(eq + 1) };
}

function parseFlagBoolean(name: string, text: string): boolean {
  try {
    return parseBoolean(text);
  } catch (err) {
    throw new ConfigError(`--${name}: ${(err as Error).message}`);
  }
}
