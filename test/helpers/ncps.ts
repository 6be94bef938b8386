/** Start ncps as users do: the CLI (`bun src/main.ts serve`), or a compiled binary named by
 * NCPS_BIN, in its own process; read its URL and key from its structured start-up log. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNcps, type RunningNcps } from "../../src/compose.ts";
import { loadConfig } from "../../src/config/load.ts";
import { silentLogger, type Logger } from "../../src/telemetry/logger.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

/** `command` (a binary, or a wrapper script that ends by exec-ing one), else NCPS_BIN, else
 * the sources. */
export function ncpsCommand(command?: string): string[] {
  if (command) return [command];
  return process.env.NCPS_BIN ? [process.env.NCPS_BIN] : ["bun", join(ROOT, "src/main.ts")];
}

export interface NcpsProcess {
  url: string;
  publicKey: string;
  dataDir: string;
  logs: string[];
  proc: ReturnType<typeof Bun.spawn>;
  stop(): Promise<void>;
}

export async function startNcpsProcess(opts: {
  /** what to run in place of NCPS_BIN or the sources (see ncpsCommand) */
  command?: string;
  args?: string[];
  env?: Record<string, string>;
  dataDir?: string;
  timeoutMs?: number;
  /** false: once started, its output is read and dropped, not kept (a benchmark's tens of
   * thousands of access-log lines a second cost the reader a core's share and GC pauses) */
  keepLogs?: boolean;
}): Promise<NcpsProcess> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), "ncps-data-")));
  const args = [
    ...ncpsCommand(opts.command),
    "serve",
    "--server-addr",
    "127.0.0.1:0",
    "--cache-storage-local",
    dataDir,
    "--cache-temp-path",
    join(dataDir, "tmp"),
    "--cache-hostname",
    "ncps-test",
    ...(opts.args ?? []),
  ];
  const proc = Bun.spawn(args, {
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", ...opts.env },
  });
  const logs: string[] = [];
  let listening = false;
  let resolveStart: (v: { url: string; publicKey: string }) => void;
  let rejectStart: (e: Error) => void;
  const started = new Promise<{ url: string; publicKey: string }>((res, rej) => {
    resolveStart = res;
    rejectStart = rej;
  });
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of stream) {
      if (listening && opts.keepLogs === false) continue;
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        logs.push(line);
        if (process.env.NCPS_TEST_LOGS) console.error(`[ncps] ${line}`);
        try {
          const rec = JSON.parse(line);
          if (rec.msg === "ncps listening") {
            listening = true;
            resolveStart({ url: rec.url, publicKey: rec.publicKey });
          }
        } catch {}
      }
    }
  };
  void pump(proc.stdout as ReadableStream<Uint8Array>);
  void pump(proc.stderr as ReadableStream<Uint8Array>);
  void proc.exited.then((code) => rejectStart(new Error(`ncps exited with ${code} before listening:\n${logs.join("\n")}`)));
  const timer = setTimeout(() => rejectStart(new Error(`ncps did not start in time:\n${logs.join("\n")}`)), opts.timeoutMs ?? 20_000);
  try {
    const { url, publicKey } = await started;
    return {
      url,
      publicKey,
      dataDir,
      logs,
      proc,
      stop: async () => {
        proc.kill("SIGTERM");
        await proc.exited;
        if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    proc.kill("SIGKILL");
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** An ncps in the test's own process (so a test can reach its cache and database), with a
 * data directory of its own and `args` as parsed flags over quiet test defaults. */
export async function startInProcess(dataDir: string, args: Record<string, unknown>, logger: Logger = silentLogger): Promise<RunningNcps> {
  const config = await loadConfig(
    {
      "server-addr": "127.0.0.1:0",
      "cache-hostname": "ncps-test",
      "cache-storage-local": dataDir,
      "cache-temp-path": join(dataDir, "tmp"),
      "cache-upstream-negative-ttl": "0s",
      ...args,
    },
    {},
  );
  return startNcps(config, logger);
}
