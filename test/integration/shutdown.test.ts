/** Graceful shutdown of `ncps serve` as a real process: SIGTERM lets a client in the middle
 * of a 100 MB NAR (stored, or still arriving from the upstream) get every byte, then the
 * process exits 0; the next start finds no temp files and fsck finds nothing; a second SIGTERM
 * stops at once. systemd hears STOPPING=1. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "../helpers/eventually.ts";
import { ncpsCommand, startNcpsProcess, type NcpsProcess } from "../helpers/ncps.ts";
import { makeSyntheticCache, sha256Nix32, type SyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const T = 120_000;
const MB = 1024 * 1024;

let work: string;
let syn: SyntheticCache;
let upstream: Upstream;
let big: SyntheticPath;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-shutdown-"));
  syn = await makeSyntheticCache(join(work, "upstream"));
  big = await syn.add("big", { size: 100 * MB });
  upstream = await startUpstream(syn.dir);
}, T); // making the 100 MB path took 3.9 s on a busy machine, against the default 5 s

afterAll(async () => {
  await upstream?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function start(dataDir: string, env: Record<string, string> = {}): Promise<NcpsProcess> {
  return startNcpsProcess({
    dataDir,
    env,
    args: ["--cache-upstream-url", upstream.url, "--cache-upstream-public-key", syn.publicKey, "--cache-upstream-negative-ttl", "0s"],
  });
}

async function narUrl(ncps: NcpsProcess, path: SyntheticPath): Promise<string> {
  const res = await fetch(`${ncps.url}/${path.hash}.narinfo`);
  expect(res.status).toBe(200);
  return `${ncps.url}/${/^URL: (.*)$/m.exec(await res.text())![1]}`;
}

/** A client that has its response headers and at least `atLeast` bytes, reading slowly on. */
async function startReading(url: string, atLeast: number) {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  const chunks: Uint8Array[] = [];
  let got = 0;
  while (got < atLeast) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    got += value.length;
  }
  return {
    /** The rest of the body, then every byte's hash; rejects when the body breaks off. */
    async finish(): Promise<{ bytes: number; hash: string }> {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        got += value.length;
      }
      return { bytes: got, hash: sha256Nix32(Buffer.concat(chunks)) };
    },
  };
}

async function waitForLog(ncps: NcpsProcess, text: string) {
  await eventually(
    `ncps logging ${text}`,
    () => {
      if (ncps.logs.some((l) => l.includes(text))) return true;
      if (ncps.proc.exitCode !== null) throw new Error(`ncps exited before logging ${text}:\n${ncps.logs.join("\n")}`);
      return false;
    },
    { everyMs: 10, explain: () => ncps.logs.join("\n") },
  );
}

async function tempFiles(dataDir: string): Promise<string[]> {
  return (await readdir(join(dataDir, "tmp")).catch(() => [])).filter((n) => n.startsWith("ncps-"));
}

/** fsck's report over the data directory; its status is 0 when it finds nothing. */
async function fsck(dataDir: string): Promise<{ status: number; report: string }> {
    // with the upstream: a narinfo whose NAR was never fetched is no problem while its upstream is there
  const args = ["--cache-storage-local", dataDir, "--cache-temp-path", join(dataDir, "tmp"), "--cache-upstream-url", upstream.url];
  const proc = Bun.spawn([...ncpsCommand(), "fsck", ...args], {
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" },
  });
  const [stdout, stderr, status] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { status, report: stdout + stderr };
}

/** After a clean stop: no temp files, fsck finds nothing, and the next start serves the NAR
 * from what was committed, without asking the upstream. */
async function expectStoredAfterRestart(dataDir: string) {
  expect(await tempFiles(dataDir)).toEqual([]);
  expect(await fsck(dataDir)).toMatchObject({ status: 0 });
  const before = upstream.hits("/nar/");
  const ncps = await start(dataDir);
  expect(sha256Nix32(new Uint8Array(await (await fetch(await narUrl(ncps, big))).arrayBuffer()))).toBe(big.narinfo.narHash);
  expect(upstream.hits("/nar/")).toBe(before);
  await ncps.stop();
}

test(
  "SIGTERM lets a client reading a stored 100 MB NAR get every byte, then exits 0",
  async () => {
    const dataDir = join(work, "hit");
    const ncps = await start(dataDir);
    const url = await narUrl(ncps, big);
    expect(sha256Nix32(new Uint8Array(await (await fetch(url)).arrayBuffer()))).toBe(big.narinfo.narHash);
    const client = await startReading(url, MB);
    ncps.proc.kill("SIGTERM");
    await waitForLog(ncps, "shutting down");
    // no new connections while the old one finishes
    await expect(fetch(`${ncps.url}/nix-cache-info`)).rejects.toThrow();
    expect(await client.finish()).toEqual({ bytes: big.nar.length, hash: big.narinfo.narHash });
    expect(await ncps.proc.exited).toBe(0);

    await expectStoredAfterRestart(dataDir);
  },
  T,
);

test(
  "SIGTERM lets a client of a NAR still downloading from the upstream get every byte; the NAR is committed",
  async () => {
    const dataDir = join(work, "miss");
    const release = Promise.withResolvers<void>();
    upstream.fault("/nar/", { kind: "hold", afterBytes: 10 * MB, until: release.promise });
    const ncps = await start(dataDir);
    const url = await narUrl(ncps, big);
    const client = await startReading(url, MB);
    ncps.proc.kill("SIGTERM");
    await waitForLog(ncps, "shutting down");
    expect(ncps.proc.exitCode).toBeNull();
    release.resolve();
    upstream.fault("/nar/", null);
    expect(await client.finish()).toEqual({ bytes: big.nar.length, hash: big.narinfo.narHash });
    expect(await ncps.proc.exited).toBe(0);

    await expectStoredAfterRestart(dataDir);
  },
  T,
);

test(
  "a second SIGTERM stops at once; the next start removes the download's temp file",
  async () => {
    const dataDir = join(work, "twice");
    const never = Promise.withResolvers<void>();
    upstream.fault("/nar/", { kind: "hold", afterBytes: 10 * MB, until: never.promise });
    let ncps = await start(dataDir);
    try {
      const client = await startReading(await narUrl(ncps, big), MB);
      ncps.proc.kill("SIGTERM");
      await waitForLog(ncps, "shutting down");
      ncps.proc.kill("SIGTERM");
      expect(await ncps.proc.exited).toBe(1);
      await expect(client.finish()).rejects.toThrow();
      expect((await tempFiles(dataDir)).length).toBe(1);
    } finally {
      never.resolve();
      upstream.fault("/nar/", null);
    }
    ncps = await start(dataDir);
    expect(await tempFiles(dataDir)).toEqual([]);
    await ncps.stop();
    expect(await fsck(dataDir)).toMatchObject({ status: 0 });
  },
  T,
);

test(
  "responses still running at --server-shutdown-timeout are cut: the process exits 1 then, not later",
  async () => {
    const dataDir = join(work, "timeout");
    const never = Promise.withResolvers<void>();
    upstream.fault("/nar/", { kind: "hold", afterBytes: 10 * MB, until: never.promise });
    const ncps = await startNcpsProcess({
      dataDir,
      args: ["--cache-upstream-url", upstream.url, "--cache-upstream-public-key", syn.publicKey, "--server-shutdown-timeout", "1s"],
    });
    try {
      const client = await startReading(await narUrl(ncps, big), MB);
      ncps.proc.kill("SIGTERM");
      await waitForLog(ncps, "shutting down");
      expect(await ncps.proc.exited).toBe(1);
      expect(ncps.logs.some((l) => l.includes('"reason":"timeout"'))).toBe(true);
      await expect(client.finish()).rejects.toThrow();
    } finally {
      never.resolve();
      upstream.fault("/nar/", null);
    }
  },
  T,
);

test(
  "with NOTIFY_SOCKET set, SIGTERM tells systemd STOPPING=1",
  async () => {
    const socket = join(work, "notify.sock");
    const listener = Bun.spawn(["python3", "-c", RECEIVE_ONE, socket], { stdout: "pipe" });
    const out = listener.stdout.getReader();
    expect(new TextDecoder().decode((await out.read()).value)).toContain("ready");
    const ncps = await start(join(work, "notify"), { NOTIFY_SOCKET: socket });
    ncps.proc.kill("SIGTERM");
    expect(await ncps.proc.exited).toBe(0);
    let said = "";
    for (;;) {
      const { done, value } = await out.read();
      if (done) break;
      said += new TextDecoder().decode(value);
    }
    expect(said.trim()).toBe("STOPPING=1");
  },
  T,
);

/** Python has Unix datagram sockets, Bun does not: receive one datagram on argv[1], print it. */
const RECEIVE_ONE = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("ready", flush=True)
print(s.recv(4096).decode(), flush=True)
`;
