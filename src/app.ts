// Wiring: config -> backends -> cache -> server. (Filled in by the serve work.)
import type { Config } from "./config/options.ts";

export async function serve(_config: Config): Promise<void> {
  throw new Error("serve: not wired yet");
}

export async function migrate(_config: Config, _opts: { dryRun: boolean; statusOnly: boolean }): Promise<void> {
  throw new Error("migrate: not wired yet");
}
