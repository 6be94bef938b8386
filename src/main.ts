#!/usr/bin/env bun
// The ncps binary: everything happens in src/cli/run.ts, except in the OTLP exporter process
// that ncps starts of itself (telemetry/otlp-exporter.ts), which loads only what it needs.
import { EXPORTER_COMMAND } from "./telemetry/exporter-command.ts";

if (process.argv[2] === EXPORTER_COMMAND) {
  // A stop signalled to ncps's whole process group (systemd signals the unit's cgroup, Ctrl-C
  // the terminal's foreground group) reaches the exporter too: it stays, so ncps can flush
  // what is pending through it and then end it. Set before the exporter's modules load.
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(signal, () => {});
  await import("./telemetry/otlp-exporter-process.ts");
} else {
  const { runCli } = await import("./cli/run.ts");
  const status = await runCli(process.argv.slice(2));
  // On success leave the process to end by itself: `serve` keeps it alive while it listens.
  if (status !== 0) process.exit(status);
}
