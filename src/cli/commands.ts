/** The commands: `serve`, `migrate up`, `migrate status`. Thin: parse, build Config, call
 * src/cli/serve.ts and migrate.ts (imported lazily so `--help` and config errors never load the server). */
import { optionsFor } from "../config/options.ts";
import type { Config } from "../config/options.ts";
import { flagSpecsOf } from "./flags.ts";
import type { FlagSpec } from "./flags.ts";

export interface CliCommand {
  name: string;
  aliases?: string[];
  description: string;
  /** Flags offered here (config options and command-local ones). */
  flags: FlagSpec[];
  subCommands?: CliCommand[];
  /** `flags` holds the parsed values of command-local flags (e.g. `dry-run`). */
  run?: (config: Config, flags: Record<string, unknown>) => Promise<void>;
}

const sharedFlags = flagSpecsOf(optionsFor("migrate"));

const serve: CliCommand = {
  name: "serve",
  aliases: ["s"], // as in the Go ncps
  description: "Serve the Nix binary cache over HTTP",
  flags: flagSpecsOf(optionsFor("serve")),
  run: async (config) => {
    const { serve } = await import("./serve.ts");
    await serve(config);
  },
};

const migrateUp: CliCommand = {
  name: "up",
  description: "Apply pending database migrations",
  flags: [
    ...sharedFlags,
    { name: "dry-run", type: "boolean", help: "Show the migrations that would run, change nothing" },
  ],
  run: async (config, flags) => {
    const { migrate } = await import("./migrate.ts");
    await migrate(config, { dryRun: flags["dry-run"] === true, statusOnly: false });
  },
};

const migrateStatus: CliCommand = {
  name: "status",
  description: "List applied and pending database migrations",
  flags: sharedFlags,
  run: async (config) => {
    const { migrate } = await import("./migrate.ts");
    await migrate(config, { dryRun: false, statusOnly: true });
  },
};

const migrate: CliCommand = {
  name: "migrate",
  description: "Database schema migrations",
  flags: sharedFlags,
  subCommands: [migrateUp, migrateStatus],
};

export const rootCommand: CliCommand = {
  name: "ncps",
  description: "Nix Cache Proxy Server: a pull-through binary cache for Nix",
  flags: [...sharedFlags, { name: "version", type: "boolean", help: "Print the version and exit" }],
  subCommands: [serve, migrate],
};

/** Flags that belong to the command itself, not to the config: loadConfig never sees them. */
export const commandLocalFlags: ReadonlySet<string> = new Set(["dry-run", "version"]);
