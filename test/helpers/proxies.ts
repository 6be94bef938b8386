/** Real forward proxies for upstream-proxy tests: Debian's tinyproxy (HTTP) and Dante's
 * danted (SOCKS5), each on a port of its own with its config and log in a temp dir, run in
 * the foreground as a child of the test and killed by stop(). */
import { writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { eventually } from "./eventually.ts";
import { freePort } from "./ports.ts";
import { hasCommand } from "./prereq.ts";

export interface RunningProxy {
  /** e.g. http://127.0.0.1:PORT or socks5://127.0.0.1:PORT */
  url: string;
  /** The proxy's log so far. */
  log(): Promise<string>;
  stop(): Promise<void>;
}

export const haveTinyproxy = hasCommand("tinyproxy");
export const haveDante = hasCommand("danted") || Bun.which("danted", { PATH: "/usr/sbin:/sbin" }) !== null;

/** Resolves once `port` accepts a connection; throws after `ms`. */
async function listening(port: number, proc: Bun.Subprocess, ms = 10_000): Promise<void> {
  await eventually(
    `proxy listening on ${port}`,
    () => {
      if (proc.exitCode !== null) throw new Error(`proxy exited with ${proc.exitCode} before listening`);
      return new Promise<boolean>((resolve) => {
        const socket = connect(port, "127.0.0.1", () => (socket.destroy(), resolve(true)));
        socket.on("error", () => resolve(false));
      });
    },
    { deadlineMs: ms, everyMs: 50 },
  );
}

async function run(cmd: string[], port: number, url: string, logFile: string, stderrFile: string): Promise<RunningProxy> {
  const proc = Bun.spawn(cmd, { stdout: Bun.file(stderrFile), stderr: Bun.file(stderrFile) });
  try {
    await listening(port, proc);
  } catch (err) {
    proc.kill("SIGKILL");
    throw new Error(`${(err as Error).message}: ${await Bun.file(stderrFile).text().catch(() => "")}`);
  }
  return {
    url,
    log: () => Bun.file(logFile).text().catch(() => ""),
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}

/** tinyproxy on 127.0.0.1, logging each request line ("GET http://host:port/path"). With no
 * LogFile it logs to its output, which we open (as root it runs as nobody, which could not
 * write into a private temp dir). */
export async function startTinyproxy(dir: string): Promise<RunningProxy> {
  const port = await freePort();
  const out = join(dir, `tinyproxy-${port}.out`);
  const conf = join(dir, `tinyproxy-${port}.conf`);
  const asRoot = process.getuid?.() === 0 ? "User nobody\nGroup nogroup\n" : "";
  await writeFile(conf, `${asRoot}Port ${port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Info\nMaxClients 20\nAllow 127.0.0.1\nDisableViaHeader Yes\n`);
  return run(["tinyproxy", "-d", "-c", conf], port, `http://127.0.0.1:${port}`, out, out);
}

/** danted (SOCKS5, no authentication) on 127.0.0.1, logging each connection it passes
 * ("127.0.0.1.CLIENTPORT 127.0.0.1.PROXYPORT -> ... 127.0.0.1.TARGETPORT"). */
export async function startDante(dir: string): Promise<RunningProxy> {
  const port = await freePort();
  const logFile = join(dir, `danted-${port}.log`);
  const conf = join(dir, `danted-${port}.conf`);
  const users = process.getuid?.() === 0 ? "user.privileged: root\nuser.unprivileged: nobody\n" : "";
  await writeFile(
    conf,
    `logoutput: ${logFile}\ninternal: 127.0.0.1 port = ${port}\nexternal: 127.0.0.1\nsocksmethod: none\nclientmethod: none\n${users}` +
      "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect }\nsocks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect }\n",
  );
  const danted = Bun.which("danted") ?? Bun.which("danted", { PATH: "/usr/sbin:/sbin" })!;
  return run([danted, "-f", conf, "-p", join(dir, `danted-${port}.pid`)], port, `socks5://127.0.0.1:${port}`, logFile, join(dir, `danted-${port}.out`));
}
