/** The commands: `serve`, `migrate up`, `migrate status`, `pin add|rm|ls`. Thin: parse, build Config, call
 * src/cli/serve.ts and migrate.ts (imported lazily so `--help` and config errors never load the server). */
import { optionByKey, optionsFor } from "../config/options.ts";
import type { Config } from "../config/options.ts";
import { ConfigError } from "../config/errors.ts";
import { flagSpecsOf, withGoNames } from "./flags.ts";
import type { FlagSpec } from "./flags.ts";
import { importGoFlags } from "./import-go-flags.ts";

export interface CliCommand {
  name: string;
  aliases?: string[];
  description: string;
  /** Flags offered here (config options and command-local ones). */
  flags: FlagSpec[];
  subCommands?: CliCommand[];
  /** Positional arguments the command requires, in order (help shows them). */
  arguments?: { name: string; help: string }[];
  /** `flags` holds the parsed values of command-local flags (e.g. `dry-run`); `args` the
   * positional arguments, as many as `arguments` names. */
  run?: (config: Config, flags: Record<string, unknown>, args: string[]) => Promise<void>;
}

const sharedFlags = withGoNames(flagSpecsOf(optionsFor("migrate")));

const serve: CliCommand = {
  name: "serve",
  aliases: ["s"], // as in the Go ncps
  description: "Serve the Nix binary cache over HTTP",
  flags: withGoNames(flagSpecsOf(optionsFor("serve"))),
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

const migrateDown: CliCommand = {
  name: "down",
  description: "Not supported: migrations are forward-only (as in the Go ncps)",
  flags: sharedFlags,
  run: async () => {
    throw new ConfigError("migrations are forward-only: there is no `migrate down` (restore a backup of the database instead)");
  },
};

const migrate: CliCommand = {
  name: "migrate",
  description: "Database schema migrations",
  flags: sharedFlags,
  subCommands: [migrateUp, migrateStatus, migrateDown],
};

/** The Go ncps's storage migrations, which have nothing to do here: they print why and succeed,
 * so a Go deployment's jobs (Helm chart, cron) keep running. */
function nothingToDo(name: string, why: string): CliCommand {
  return {
    name,
    description: `Go ncps command with nothing to do here: ${why}`,
    flags: withGoNames([{ name: "dry-run", type: "boolean", help: "Accepted as in the Go ncps" }]),
    run: async () => {
      console.log(`ncps ${name}: nothing to do: ${why}`);
    },
  };
}

const goMigrations: CliCommand[] = [
  nothingToDo("migrate-narinfo", "ncps keeps narinfos in its database, never as files in storage"),
  cdcMigration("migrate-nar-to-chunks", "to-chunks", "Store whole NARs (those named uncompressed) as content-defined chunks, each verified against its NarHash first"),
  cdcMigration("migrate-chunks-to-nar", "to-nar", "Store chunked NARs whole again, each verified against its NarHash first"),
];

function cdcMigration(name: string, direction: "to-chunks" | "to-nar", description: string): CliCommand {
  return {
    name,
    description: `${description}; interruptible, re-runnable`,
    flags: withGoNames([
      ...flagSpecsOf(optionsFor("serve")),
      { name: "dry-run", type: "boolean", help: "Count what would be converted and change nothing" },
      { name: "concurrency", type: "string", valueHint: "n", help: "NARs converted at once (default 4)" },
    ]),
    run: async (config, flags) => {
      const concurrency = flags.concurrency === undefined ? 4 : Number(flags.concurrency);
      if (!Number.isSafeInteger(concurrency) || concurrency < 1) throw new ConfigError(`--concurrency must be a whole number of at least 1, got ${flags.concurrency}`);
      const { runCdcMigration } = await import("./cdc-migrate.ts");
      await runCdcMigration(config, direction, { dryRun: flags["dry-run"] === true, concurrency });
    },
  };
}

const fsck: CliCommand = {
  name: "fsck",
  description: "Check that the database and storage agree (and repair with --repair)",
  flags: withGoNames([
    ...flagSpecsOf(optionsFor("fsck")),
    // Switches for this run only, as in the Go ncps: never from the environment or a file.
    { name: "repair", type: "boolean", help: "Repair what is found: forget broken NARs and their unservable narinfos, remove strays and temp files, recount the stored total" },
    { name: "dry-run", type: "boolean", help: "Report only and change nothing, even with --repair" },
    { name: "verify-content", type: "boolean", help: "Also re-hash every stored NAR against its FileHash and NarHash (reads every byte)" },
  ]),
  run: async (config, flags) => {
    const { runFsck } = await import("./fsck.ts");
    await runFsck(config, { repair: flags.repair === true, dryRun: flags["dry-run"] === true, verifyContent: flags["verify-content"] === true });
  },
};

const importGo: CliCommand = {
  name: "import-go",
  description: "Import a Go ncps deployment: its narinfos, NARs (each verified) and signing key; re-run it to finish an interrupted import",
  flags: withGoNames([...flagSpecsOf(optionsFor("serve")), ...importGoFlags]),
  run: async (config, flags) => {
    const { runImportGo } = await import("./import-go.ts");
    await runImportGo(config, flags);
  },
};

const pinFlags: FlagSpec[] = withGoNames([
  ...sharedFlags.filter((f) => !f.hidden),
  // the storage directory too: the default database lives in it, as for serve
  ...flagSpecsOf([optionByKey("cacheStorageLocal"), optionByKey("cachePutToken"), optionByKey("cacheGetToken")]),
  {
    name: "server-url",
    type: "string",
    valueHint: "url",
    help: "Ask this running ncps (with the put or get token) instead of the database; `add` then fetches the missing closure at once",
  },
]);

const pinTargetArg = [{ name: "path", help: "A store path (/nix/store/<hash>-<name>) or its hash" }];

const pinAction = (action: "add" | "rm" | "ls"): CliCommand["run"] => async (config, flags, args) => {
  const { pin } = await import("./pin.ts");
  await pin(config, action, args[0], { serverUrl: flags["server-url"] as string | undefined });
};

const pin: CliCommand = {
  name: "pin",
  description: "Pins: a pinned store path's whole closure is kept through eviction",
  flags: pinFlags,
  subCommands: [
    {
      name: "add",
      description: "Pin a store path (without --server-url: recorded now, its missing closure fetched when a server starts)",
      flags: pinFlags,
      arguments: pinTargetArg,
      run: pinAction("add"),
    },
    { name: "rm", description: "Unpin a store path", flags: pinFlags, arguments: pinTargetArg, run: pinAction("rm") },
    { name: "ls", description: "List pins and how much of each closure is cached", flags: pinFlags, run: pinAction("ls") },
  ],
};

export const rootCommand: CliCommand = {
  name: "ncps",
  description: "Nix Cache Proxy Server: a pull-through binary cache for Nix",
  flags: [
    { name: "version", type: "boolean", help: "Print the version and exit (also -v)" },
    { name: "v", type: "boolean", help: "Print the version and exit", hidden: true },
    ...sharedFlags,
  ],
  subCommands: [serve, migrate, pin, fsck, importGo, ...goMigrations],
};

/** Flags that belong to the command itself, not to the config: loadConfig never sees them. */
export const commandLocalFlags: ReadonlySet<string> = new Set(["dry-run", "concurrency", "version", "v", "server-url", "repair", "verify-content", ...importGoFlags.map((f) => f.name)]);
