/** Text to typed values, shared by flags, environment variables and config files. Each
 * parser throws a ConfigError whose message the caller prefixes with where the value came
 * from. */
import { ConfigError } from "./errors.ts";

/** Lists arrive as one string from the environment (and may from a flag or a file): split on
 * commas and whitespace, so both `a,b` and the nix.conf habit `a b` work. No URL or key has
 * either character. */
export function splitList(text: string): string[] {
  return text.split(/[\s,]+/).filter((item) => item !== "");
}

// Go's strconv.ParseBool spellings, plus yes/no and on/off.
const booleanWords: Record<string, boolean> = {
  "1": true, t: true, true: true, yes: true, y: true, on: true,
  "0": false, f: false, false: false, no: false, n: false, off: false,
};

export function parseBoolean(text: string): boolean {
  const value = booleanWords[text.trim().toLowerCase()];
  if (value === undefined) throw new ConfigError(`invalid boolean "${text}" (use true or false)`);
  return value;
}

export function parseInteger(text: string): number {
  const trimmed = text.trim();
  if (!/^[+-]?\d+$/.test(trimmed)) throw new ConfigError(`invalid integer "${text}"`);
  const value = Number(trimmed);
  if (!Number.isSafeInteger(value)) throw new ConfigError(`integer "${text}" is too large`);
  return value;
}

const bytesPerUnit: Record<string, number> = { "": 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** A size in bytes: a plain number, or a number with K, M, G or T (binary units; "KB",
 * "KiB" and "k" read the same), as the Go ncps writes `--cache-max-size 100G`. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  const unit = bytesPerUnit[(m?.[2] ?? "").toLowerCase()];
  if (!m || unit === undefined) throw new ConfigError(`invalid size "${text}" (use bytes or K, M, G, T like 10G)`);
  const value = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(value)) throw new ConfigError(`size "${text}" is too large`);
  return value;
}

const msPerUnit: Record<string, number> = {
  ns: 1e-6, us: 1e-3, "µs": 1e-3, "μs": 1e-3, ms: 1, s: 1_000, m: 60_000, h: 3_600_000,
};

/** A Go duration ("3s", "500ms", "1m30s", "1.5h", "0") in milliseconds. Negative durations
 * are refused: every duration here is a timeout or a lifetime. */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  const invalid = () => new ConfigError(`invalid duration "${text}" (use Go syntax like 3s, 500ms, 1m30s)`);
  if (trimmed.startsWith("-")) throw new ConfigError(`duration "${text}" is negative`);
  const body = trimmed.startsWith("+") ? trimmed.slice(1) : trimmed;
  if (body === "0") return 0;
  if (body === "") throw invalid();
  let total = 0;
  const segment = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
  let at = 0;
  while (at < body.length) {
    segment.lastIndex = at;
    const match = segment.exec(body);
    if (!match) throw invalid();
    total += Number(match[1]) * (msPerUnit[match[2] ?? ""] ?? NaN);
    at = segment.lastIndex;
  }
  if (!Number.isFinite(total)) throw invalid();
  return total;
}
