#!/usr/bin/env bun
// The ncps binary: everything happens in src/cli/run.ts.
import { runCli } from "./cli/run.ts";

const status = await runCli(process.argv.slice(2));
// On success leave the process to end by itself: `serve` keeps it alive while it listens.
if (status !== 0) process.exit(status);
