/** The command line: find the command, print help or the version, parse flags strictly,
 * load the config, run. Every user mistake ends as one `ncps: ...` line on stderr and exit
 * status 1, never a stack trace. */
import { defineCommand, renderUsage } from "citty";
import type { CommandDef } from "citty";
import { isUserFacing } from "../config/errors.ts";
import { ConfigError, loadConfig } from "../config/load.ts";
import { createLogger } from "../telemetry/logger.ts";
import { commit, version } from "../version.ts";
import { commandLocalFlags, rootCommand } from "./commands.ts";
import type { CliCommand } from "./commands.ts";
import { cittyArgs, isKnownFlag, parseFlags, takesValue } from "./flags.ts";

export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: Record<string, string | undefined>;
  /** Help keeps citty's colours only on a terminal. */
  colour: boolean;
}

const processIO: CliIO = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  env: process.env,
  colour: process.stdout.isTTY === true,
};

/** Runs `ncps ARGV...`; resolves to the exit status (0 also while `serve` keeps running). */
export async function runCli(argv: readonly string[], io: CliIO = processIO): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (err) {
    if (isUserFacing(err)) {
      io.stderr(`ncps: ${err.message.split("\n")[0]}\n`);
    } else {
      // A bug, not a user mistake: the stack is what a bug report needs.
      io.stderr(`ncps: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    }
    return 1;
  }
}

async function dispatch(argv: readonly string[], io: CliIO): Promise<number> {
  const flagsPart = argv.slice(0, endOfFlags(argv));
  // `ncps help [command...]` and `ncps <command> help`, as in the Go ncps (urfave/cli)
  const helpWord = flagsPart.findIndex((t) => t === "help");
  if (helpWord >= 0 && !flagsPart.slice(0, helpWord).some((t) => t.startsWith("-"))) {
    return dispatch([...argv.slice(0, helpWord), ...argv.slice(helpWord + 1), "--help"], io);
  }
  const helpRequested = flagsPart.some((t) => t === "--help" || t === "-h");
  const { path, rest } = findCommand(argv, helpRequested);
  const command = path[path.length - 1] ?? rootCommand;
  const commandName = path.map((c) => c.name).join(" ");

  if (helpRequested) {
    const usage = await renderUsage(cittyCommand(command, commandName));
    io.stdout(`${io.colour ? usage : stripAnsi(usage)}\n`);
    return 0;
  }

  const { values, positionals } = parseFlags(rest, command.flags, commandName);
  if (command === rootCommand && (values.version === true || values.v === true)) {
    io.stdout(`ncps ${version} (${commit})\n`);
    return 0;
  }
  const wanted = command.arguments ?? [];
  if (positionals.length > wanted.length) throw new ConfigError(`unexpected argument "${positionals[wanted.length]}" for ${commandName}`);
  if (!command.run) {
    const choices = (command.subCommands ?? []).map((c) => c.name).join(" or ");
    throw new ConfigError(`missing command for ${commandName}: use ${choices} (see ${commandName} --help)`);
  }

  const missing = wanted[positionals.length];
  if (missing) throw new ConfigError(`missing ${missing.name} for ${commandName} (see ${commandName} --help)`);

  const configArgs = Object.fromEntries(Object.entries(values).filter(([name]) => !commandLocalFlags.has(name)));
  const warnings: string[] = [];
  const config = await loadConfig(configArgs, io.env, { warn: (message) => warnings.push(message) });
  // Warnings wait for the config: they then go out as log lines at the configured level.
  const logger = createLogger(config.logLevel, {}, io.stderr);
  for (const message of warnings) logger.warn(message);

  await command.run(config, values, positionals);
  return 0;
}

function endOfFlags(argv: readonly string[]): number {
  const end = argv.indexOf("--");
  return end < 0 ? argv.length : end;
}

/** Walks the command names (`migrate up`), letting flags stand anywhere: `ncps --log-level
 * debug serve` works as in the Go ncps. Returns every other token for the final command. */
function findCommand(argv: readonly string[], lenient: boolean): { path: CliCommand[]; rest: string[] } {
  const path: CliCommand[] = [rootCommand];
  const rest: string[] = [];
  let command = rootCommand;
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i] ?? "";
    const commandName = () => path.map((c) => c.name).join(" ");
    if (token === "--") {
      rest.push(...argv.slice(i));
      break;
    }
    if (token === "--help" || token === "-h") continue;
    if (token.startsWith("-") && token !== "-") {
      if (!lenient && !isKnownFlag(token, command.flags)) {
        throw new ConfigError(`unknown option ${token.split("=")[0]} for ${commandName()} (see ${commandName()} --help)`);
      }
      rest.push(token);
      const value = argv[i + 1];
      if (takesValue(token, command.flags) && value !== undefined) {
        rest.push(value);
        i++;
      }
      continue;
    }
    const sub = command.subCommands?.find((c) => c.name === token || c.aliases?.includes(token));
    if (sub) {
      command = sub;
      path.push(sub);
      continue;
    }
    if (command.subCommands && !lenient) {
      const choices = command.subCommands.map((c) => c.name).join(", ");
      throw new ConfigError(`unknown command "${token}" for ${commandName()} (use ${choices})`);
    }
    rest.push(token);
  }
  return { path, rest };
}

function cittyCommand(command: CliCommand, fullName: string): CommandDef {
  const subCommands = Object.fromEntries(
    (command.subCommands ?? []).map((sub) => [sub.name, cittyCommand(sub, `${fullName} ${sub.name}`)]),
  );
  return defineCommand({
    meta: { name: fullName, description: command.description, version, alias: command.aliases },
    args: {
      ...Object.fromEntries((command.arguments ?? []).map((a) => [a.name, { type: "positional" as const, description: a.help }])),
      ...cittyArgs(command.flags),
    },
    subCommands: command.subCommands ? subCommands : undefined,
  });
}

function stripAnsi(text: string): string {
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}
