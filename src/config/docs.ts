/** The README's option section, generated from the option table (see
 * scripts/gen-options-table.ts; a unit test fails when the README is out of date). */
import { describeDefault, goOnlyOptions, options, optionsFor } from "./options.ts";
import type { GoOnlyOption, OptionSpec } from "./options.ts";

export const beginMarker = "<!-- options:begin -->";
export const endMarker = "<!-- options:end -->";

const typeNames: Record<OptionSpec["type"], string> = {
  string: "string",
  "string[]": "list",
  boolean: "boolean",
  integer: "integer",
  duration: "duration",
  size: "size",
};

function cell(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function code(text: string): string {
  return `\`${text}\``;
}

function row(o: OptionSpec): string {
  const dep = o.deprecated;
  const deprecatedNames = [
    ...(dep?.flags ?? []).map((f) => `--${f}`),
    ...(dep?.env ?? []),
    ...(dep?.configKeys ?? []),
  ].map(code);
  const description = o.help + (deprecatedNames.length ? `. Deprecated: ${deprecatedNames.join(", ")}` : "");
  // A plain value reads as code (`:8501`); a computed default is prose.
  const defaultText = o.defaultText !== undefined ? cell(o.defaultText) : describeDefault(o) && code(describeDefault(o));
  return `| ${[
    code(`--${o.flag}`),
    o.env.map(code).join(", "),
    o.configKey ? code(o.configKey) : "",
    o.choices ? o.choices.join(", ") : typeNames[o.type],
    defaultText,
    commandsOf(o),
    cell(description),
  ].join(" | ")} |`;
}

function goOnlyRow(o: GoOnlyOption): string {
  return `| ${[code(`--${o.flag}`), o.env.map(code).join(", "), o.configKey ? code(o.configKey) : "", cell(o.instead)].join(" | ")} |`;
}

function commandsOf(o: OptionSpec): string {
  const offering = (["serve", "migrate", "fsck"] as const).filter((c) => optionsFor(c).includes(o));
  return offering.length === 3 ? "all" : offering.join(", ");
}

/** The whole section between the markers, markers included. */
export function renderOptionsSection(): string {
  return [
    beginMarker,
    "<!-- Generated from src/config/options.ts by `bun scripts/gen-options-table.ts`; edit there. -->",
    "",
    "Every option can be a flag, an environment variable or a key in a config file.",
    "Precedence: **flag > config file > environment > default**.",
    "",
    "- Config file: `--config FILE` or `NCPS_CONFIG_FILE`, else `$XDG_CONFIG_HOME/ncps/config.yaml`",
    "  when it exists. YAML (`.yaml`, `.yml`), TOML (`.toml`) or JSON (`.json`), with nested keys:",
    "  `cache.upstream.urls` is `cache: { upstream: { urls: [...] } }`. Unknown keys are ignored",
    "  with a warning, so a Go ncps config file loads as it is.",
    "- Lists: repeat the flag (`--cache-upstream-url A --cache-upstream-url B`); a list given as",
    "  one string (environment, flag or file) is split on commas and spaces",
    "  (`CACHE_UPSTREAM_URLS=\"A,B\"` or `\"A B\"`).",
    "- Durations use Go syntax: `500ms`, `3s`, `1m30s`, `1h`.",
    "- Booleans: `--flag`, `--no-flag`, `--flag=false`; `true`/`false` (also `1`/`0`, `yes`/`no`).",
    "- An empty value counts as not set.",
    "- Deprecated names of the Go ncps still work, with a warning. A deprecated name ranks just",
    "  below the current name of the same source: `--upstream-cache` beats `CACHE_UPSTREAM_URLS`",
    "  but loses to `--cache-upstream-url`.",
    "- Commands: `ncps serve` takes every option but fsck's own; `ncps migrate up [--dry-run]` and",
    "  `ncps migrate status` take those marked *all* (and read the others from file and",
    "  environment like any command). `ncps fsck [--repair] [--dry-run] [--verify-content]` takes",
    "  those marked *all* or *fsck* (see [Keeping the cache in bounds](#keeping-the-cache-in-bounds)).",
    "  Every command also accepts, unlisted in its `--help`, every other flag of the table (as the",
    "  Go ncps's commands share theirs). `ncps -v` prints the version, `ncps help [command]` the help.",
    "",
    "| Flag | Environment | Config key | Type | Default | Commands | Description |",
    "|---|---|---|---|---|---|---|",
    ...options.map(row),
    "",
    "**Go ncps options ncps does not implement.** Accepted by every command (as flag, environment",
    "variable or config key) so a Go ncps command line, env file or config file starts ncps",
    "unchanged; each one set costs one warning line at start. Not in `--help`.",
    "The Go ncps's `migrate-narinfo` command exists and succeeds with nothing to do;",
    "`migrate-nar-to-chunks` and `migrate-chunks-to-nar` work (see Content-defined chunking);",
    "`migrate down` fails, as in the Go ncps.",
    "",
    "| Flag | Environment | Config key | What ncps does instead |",
    "|---|---|---|---|",
    ...goOnlyOptions.map(goOnlyRow),
    endMarker,
  ].join("\n");
}

/** `readme` with its option section replaced; throws when the markers are missing. */
export function replaceOptionsSection(readme: string, section: string = renderOptionsSection()): string {
  const begin = readme.indexOf(beginMarker);
  const end = readme.indexOf(endMarker);
  if (begin < 0 || end < begin) throw new Error(`README has no ${beginMarker} ... ${endMarker} section`);
  return readme.slice(0, begin) + section + readme.slice(end + endMarker.length);
}
