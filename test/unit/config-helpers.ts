/** Shared by the config tests: loadConfig in a throwaway home, never the real one. */
import { afterAll } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config/load.ts";
import type { Config } from "../../src/config/options.ts";

export interface Loaded {
  config: Config;
  warnings: string[];
}

/** A fresh home directory for the calling test file (removed after its tests), and
 * loadConfig as a non-root user on host "testhost" living there. */
export function testHome() {
  const home = mkdtempSync(join(tmpdir(), "ncps-config-test-"));
  afterAll(() => rmSync(home, { recursive: true, force: true }));
  let fileCounter = 0;

  /** Writes `text` to a fresh file named `*.ext` and returns its path. */
  function writeTemp(ext: string, text: string): string {
    const path = join(home, `config-${++fileCounter}.${ext}`);
    writeFileSync(path, text);
    return path;
  }

  async function load(
    args: Record<string, unknown> = {},
    env: Record<string, string> = {},
    system: { isRoot?: boolean; homeDir?: string } = {},
  ): Promise<Loaded> {
    const warnings: string[] = [];
    const baseEnv = { HOME: home, XDG_CONFIG_HOME: join(home, "xdg-config") };
    const config = await loadConfig(args, { ...baseEnv, ...env }, {
      warn: (message) => warnings.push(message),
      system: { isRoot: false, homeDir: home, hostname: "testhost", tmpDir: "/tmp", fileExists: existsSync, ...system },
    });
    return { config, warnings };
  }

  /** The error loadConfig rejects with (fails the test when it resolves). */
  async function loadError(args: Record<string, unknown> = {}, env: Record<string, string> = {}): Promise<Error> {
    try {
      await load(args, env);
    } catch (err) {
      return err as Error;
    }
    throw new Error("expected loadConfig to fail");
  }

  return { home, writeTemp, load, loadError };
}
