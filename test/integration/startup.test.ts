/** Starting ncps as a user would: no arguments at all, unreachable upstreams, wrong options. */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ncpsCommand, startNcpsProcess } from "../helpers/ncps.ts";

async function runNcps(args: string[], env: Record<string, string> = {}) {
  const proc = Bun.spawn([...ncpsCommand(), ...args], {
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", ...env },
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 20_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { stdout, stderr, code };
}

describe("startup", () => {
  test("starts with no arguments at all and answers misses with 404 fast when no upstream is reachable", async () => {
    // Root's documented default data directory; removed afterwards unless it was already there.
    const defaultDir = process.getuid?.() === 0 ? "/var/lib/ncps" : join(process.env.HOME ?? "/root", ".local/share/ncps");
    const existed = existsSync(defaultDir);
    const proc = Bun.spawn([...ncpsCommand(), "serve"], {
      stdout: "pipe",
      stderr: "pipe",
      // SERVER_ADDR only so parallel test runs do not fight over :8501; no flags at all.
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", SERVER_ADDR: "127.0.0.1:0" },
    });
    try {
      let url = "";
      const decoder = new TextDecoder();
      let buf = "";
      for await (const chunk of proc.stderr as ReadableStream<Uint8Array>) {
        buf += decoder.decode(chunk);
        const m = /"msg":"ncps listening","url":"([^"]+)"/.exec(buf);
        if (m) {
          url = m[1]!;
          break;
        }
      }
      expect(url).not.toBe("");
      expect(buf).toContain('"upstreams":["https://cache.nixos.org"]');
      const info = await (await fetch(`${url}/nix-cache-info`)).text();
      expect(info).toContain("Priority: 10");
      const started = Date.now();
      // A hash no cache has, so the answer is 404 with or without internet.
      const res = await fetch(`${url}/00000000000000000000000000000000.narinfo`);
      expect(res.status).toBe(404);
      expect(Date.now() - started).toBeLessThan(15_000); // must not hang, reachable upstream or not
      expect(existsSync(join(defaultDir, "db/db.sqlite"))).toBe(true);
    } finally {
      proc.kill("SIGTERM");
      await proc.exited;
      if (!existed) await rm(defaultDir, { recursive: true, force: true });
    }
  }, 60_000);

  test("the signing key is generated once and kept across restarts", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "ncps-key-"));
    try {
      const first = await startNcpsProcess({ dataDir, args: ["--cache-upstream-url", "http://127.0.0.1:9", "--cache-upstream-public-key", "x-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="] });
      await first.stop();
      const second = await startNcpsProcess({ dataDir, args: ["--cache-upstream-url", "http://127.0.0.1:9", "--cache-upstream-public-key", "x-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="] });
      const pubkey = (await (await fetch(`${second.url}/pubkey`)).text()).trim();
      await second.stop();
      expect(second.publicKey).toBe(first.publicKey);
      expect(pubkey).toBe(first.publicKey);
      expect(first.publicKey.startsWith("ncps-test:")).toBe(true);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 60_000);

  for (const [what, args] of [
    ["an unknown upstream URL scheme", ["--cache-upstream-url", "ftp://cache.example.org"]],
    ["a malformed upstream key", ["--cache-upstream-public-key", "not-a-key"]],
    ["an unwritable storage directory", ["--cache-storage-local", "/etc/passwd/ncps"]],
    ["a secret key file that does not exist", ["--cache-secret-key-path", "/nonexistent/ncps.sk"]],
    ["a malformed secret key", ["--cache-secret-key-path", "/etc/hostname"]],
    ["an unreachable Redis", ["--cache-redis-addrs", "127.0.0.1:1"]],
    ["a malformed Redis address", ["--cache-redis-addrs", "redis://x"]],
  ] as const) {
    test(`${what} stops startup with one clear line and a non-zero exit`, async () => {
      const dataDir = await mkdtemp(join(tmpdir(), "ncps-bad-"));
      try {
        const r = await runNcps(["serve", "--server-addr", "127.0.0.1:0", "--cache-storage-local", dataDir, ...args]);
        expect(r.code).not.toBe(0);
        const lines = r.stderr.split("\n").filter(Boolean);
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(/^ncps: /);
        expect(r.stderr).not.toContain("    at ");
      } finally {
        await rm(dataDir, { recursive: true, force: true });
      }
    }, 30_000);
  }
});
