/** What a site runs: two ncps replicas (`ncps serve` processes) behind haproxy (round-robin),
 * sharing a fresh PostgreSQL database, an S3 bucket (s3rver) and Redis, with the real Nix
 * client substituting through the balancer:
 * - the upstream sees one download per NAR however the requests are spread;
 * - a replica SIGKILLed in the middle of a large NAR: the client's retry succeeds through the
 *   other replica, and `ncps fsck --verify-content` finds nothing half-written;
 * - both replicas restarted one after the other while clients substitute: no client fails. */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "../helpers/eventually.ts";
import { buildClosure, createNixEnv, makeKeyPair, nixAvailable, publishCache, storePathHash, substitute, verifyStore, type NixEnv } from "../helpers/nix.ts";
import { ncpsCommand, startNcpsProcess, type NcpsProcess } from "../helpers/ncps.ts";
import { freePort } from "../helpers/ports.ts";
import { describeIf, hasCommand, testIf } from "../helpers/prereq.ts";
import { s3Flags, s3rverAvailable, startS3rver, type S3rver } from "../helpers/s3rver.ts";
import { createTestDatabase, testServer, type TestDatabase } from "../helpers/server-databases.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const HAPROXY = "/usr/sbin/haproxy";
const redisUrl = process.env.NCPS_TEST_REDIS_URL;
const postgres = await testServer("postgres");
const missing = [
  !nixAvailable && "the real Nix (nix-bin)",
  !hasCommand(HAPROXY) && "haproxy",
  !s3rverAvailable && "node and the s3rver devDependency",
  redisUrl === undefined && "NCPS_TEST_REDIS_URL",
  postgres.url === null && `PostgreSQL (${postgres.problem})`,
].filter(Boolean);
const test = testIf(missing.length === 0, `needs ${missing.join(", ")}`);
const T = 120_000;
const BIG = 48 * 1024 * 1024;

/** One replica: its fixed port (haproxy names it) and the process serving on it now. */
interface Replica {
  name: string;
  port: number;
  proc: NcpsProcess;
}

describeIf(missing.length === 0)("a cluster: two replicas behind haproxy on PostgreSQL, S3 and Redis", () => {
  let nix: NixEnv;
  let work: string;
  let upstream: Upstream;
  let s3: S3rver;
  let db: TestDatabase;
  let haproxy: ReturnType<typeof Bun.spawn>;
  let lbUrl: string;
  let upstreamKey: string;
  let first: { paths: string[] };
  let second: { paths: string[]; big?: string };
  const replicas: Replica[] = [];
  let clusterArgs: string[];
  /** where the cluster keeps what it knows: what fsck checks */
  let storeArgs: string[];

  async function startReplica(name: string, port: number): Promise<NcpsProcess> {
    return startNcpsProcess({
      dataDir: join(work, name),
      args: [...clusterArgs, "--server-addr", `127.0.0.1:${port}`, "--cache-temp-path", join(work, name, "tmp")],
    });
  }

  /** Upstream requests for the NAR of each path (by the URL in its upstream narinfo). */
  async function narHits(paths: string[]): Promise<number[]> {
    return Promise.all(
      paths.map(async (path) => {
        const url = /^URL: (.*)$/m.exec(await Bun.file(join(upstream.dir, `${storePathHash(path)}.narinfo`)).text())![1]!;
        return upstream.hits(`/${url}`);
      }),
    );
  }

  beforeAll(async () => {
    if (missing.length > 0) throw new Error(`prerequisites missing: ${missing.join(", ")}`);
    nix = await createNixEnv();
    work = await mkdtemp(join(tmpdir(), "ncps-cluster-"));
    const key = await makeKeyPair(nix, "cluster-upstream-1");
    upstreamKey = key.publicKey;
    const store = nix.store("upstream");
    const seed = `cluster-${Date.now()}`;
    first = await buildClosure(nix, store, { count: 8, seed: `${seed}-first` });
    second = await buildClosure(nix, store, { count: 3, bigBytes: BIG, seed: `${seed}-second` });
    await publishCache(nix, store, [...first.paths, ...second.paths], join(work, "upstream"), { compression: "zstd", key });
    upstream = await startUpstream(join(work, "upstream"));
    s3 = await startS3rver();
    db = await createTestDatabase(postgres.url!);
    const redis = new URL(redisUrl!);
    storeArgs = ["--cache-database-url", db.url, ...s3Flags(s3), "--cache-storage-local="];
    clusterArgs = [
      ...storeArgs,
      "--cache-upstream-url", upstream.url,
      "--cache-upstream-public-key", key.publicKey,
      "--cache-redis-addrs", `${redis.hostname}:${redis.port || "6379"}`,
      "--cache-lock-redis-key-prefix", `ncps-cluster-${crypto.randomUUID()}:`,
      // a killed replica's claim lapses after this: the time a retry waits for the takeover
      "--cache-lock-download-ttl", "3s",
      "--server-shutdown-timeout", "20s",
    ];
    const ports = [await freePort(), await freePort()];
    for (const [i, port] of ports.entries()) {
      const name = `r${i + 1}`;
      await mkdir(join(work, name), { recursive: true });
      replicas.push({ name, port, proc: await startReplica(name, port) });
    }
    const lbPort = await freePort();
    lbUrl = `http://127.0.0.1:${lbPort}`;
    // Round-robin; a replica is out after two failed checks (300 ms apart; a check may take
    // 3 s on a busy machine) and a refused connection is retried on the other (redispatch).
    const config = `global
  maxconn 512
defaults
  mode http
  timeout connect 1s
  timeout client 120s
  timeout server 120s
  timeout check 3s
  retries 3
  option redispatch 1
frontend cluster
  bind 127.0.0.1:${lbPort}
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk
  http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host ncps
  default-server inter 300ms fall 2 rise 1
${replicas.map((r) => `  server ${r.name} 127.0.0.1:${r.port} check`).join("\n")}
`;
    await writeFile(join(work, "haproxy.cfg"), config);
    haproxy = Bun.spawn([HAPROXY, "-db", "-f", join(work, "haproxy.cfg")], { stdout: "ignore", stderr: "pipe" });
    await eventually("haproxy serving", async () => (await fetch(`${lbUrl}/healthz`).then((r) => r.status, () => 0)) === 200, { deadlineMs: 10_000, everyMs: 25 });
  }, T);

  afterAll(async () => {
    haproxy?.kill("SIGTERM");
    await haproxy?.exited;
    for (const r of replicas) await r.proc.stop().catch(() => {});
    await upstream?.stop();
    await s3?.stop();
    await db?.drop();
    await nix?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  }, 60_000);

  test("two Nix clients substitute one closure through the balancer at once: one upstream download per NAR, both replicas used", async () => {
    const stores = [nix.store("client-a"), nix.store("client-b")];
    const results = await Promise.all(
      stores.map((store) => substitute(nix, { from: lbUrl, paths: [first.paths.at(-1)!], trustedKeys: [replicas[0]!.proc.publicKey], store })),
    );
    for (const r of results) expect(r).toMatchObject({ code: 0 });
    for (const store of stores) await verifyStore(nix, store, first.paths, [replicas[0]!.proc.publicKey]);
    expect(await narHits(first.paths)).toEqual(first.paths.map(() => 1));
    // both replicas served requests
    for (const r of replicas) expect(r.proc.logs.some((l) => l.includes('"msg":"request"') && l.includes('"route":"nar'))).toBe(true);
  }, T);

  test("the replica downloading a large NAR is SIGKILLed mid-way: the client's retry succeeds through the other, and nothing half-written is recorded", async () => {
    const bigUrl = /^URL: (.*)$/m.exec(await Bun.file(join(upstream.dir, `${storePathHash(second.big!)}.narinfo`)).text())![1]!;
    const narFile = bigUrl.slice("nar/".length);
    const release = Promise.withResolvers<void>();
    upstream.fault(`/${bigUrl}`, { kind: "hold", afterBytes: 8 * 1024 * 1024, until: release.promise }, { times: 1 });
    const store = nix.store("client-killed");
    const client = substitute(nix, { from: lbUrl, paths: [second.paths.at(-1)!], trustedKeys: [replicas[0]!.proc.publicKey], store });
    // the holder: the replica that started the download, once it has the bytes the upstream sent
    const holder = await eventually(
      "a replica downloading the large NAR",
      () => replicas.find((r) => r.proc.logs.some((l) => l.includes('"NAR download started"') && l.includes(narFile))),
      { deadlineMs: 60_000, everyMs: 25 },
    );
    const tempDir = join(work, holder.name, "tmp");
    await eventually(
      "8 MiB in the holder's temp file",
      async () => {
        for (const name of await readdir(tempDir).catch(() => [] as string[])) {
          if ((await stat(join(tempDir, name)).catch(() => null))?.size === 8 * 1024 * 1024) return true;
        }
      },
      { deadlineMs: 30_000, everyMs: 25 },
    );
    holder.proc.proc.kill("SIGKILL");
    await holder.proc.proc.exited;
    release.resolve();
    const r = await client;
    if (process.env.NCPS_TEST_LOGS) console.error(r.stderr);
    // Nix saw the broken transfer and retried (a warning), and then succeeded
    expect(r.stderr).toMatch(/warning: error: .*retrying/);
    expect({ code: r.code, stderr: r.code === 0 ? "" : r.stderr }).toEqual({ code: 0, stderr: "" });
    await verifyStore(nix, store, second.paths, [replicas[0]!.proc.publicKey]);
    // the killed download and the one that took it over
    expect(upstream.hits(`/${bigUrl}`)).toBe(2);
    // The client has its last byte once the NAR is verified, before it is committed: fsck must
    // not run until then (a CI run under load found the narinfo "without its NAR" in between).
    const survivor = replicas.find((r) => r !== holder)!;
    await eventually("the other replica storing the NAR", () => survivor.proc.logs.some((l) => l.includes('"NAR stored"') && l.includes(narFile)), { deadlineMs: 60_000, everyMs: 25 });

    holder.proc = await startReplica(holder.name, holder.port);
    const fsck = Bun.spawn([...ncpsCommand(), "fsck", "--verify-content", "--stray-grace", "0s", ...storeArgs], {
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, code] = [await new Response(fsck.stdout).text(), await fsck.exited];
    expect({ code, out }).toMatchObject({ code: 0 });
    expect(out).toContain("no problems found");
  }, T);

  test("both replicas restarted one after the other while clients substitute: no client fails", async () => {
    let restarting = true;
    const failures: string[] = [];
    let runs = 0;
    const client = async (i: number) => {
      for (let n = 0; restarting || n === 0; n++) {
        const store = nix.store(`client-rolling-${i}-${n}`);
        const r = await substitute(nix, { from: lbUrl, paths: [first.paths.at(-1)!, second.paths.at(-1)!], trustedKeys: [replicas[0]!.proc.publicKey], store });
        runs++;
        if (r.code !== 0) failures.push(r.stderr.split("\n").filter((l) => l.includes("error")).join(" | "));
      }
    };
    const clients = [client(0), client(1)];
    for (const r of replicas) {
      await r.proc.stop(); // SIGTERM: stops listening, finishes what it serves
      r.proc = await startReplica(r.name, r.port);
      await eventually(
        `haproxy sees ${r.name} again`,
        async () => {
          const logs = r.proc.logs.length;
          for (let i = 0; i < 4; i++) await fetch(`${lbUrl}/nix-cache-info`);
          return r.proc.logs.length > logs;
        },
        { deadlineMs: 10_000, everyMs: 25 },
      );
    }
    restarting = false;
    await Promise.all(clients);
    expect(failures).toEqual([]);
    expect(runs).toBeGreaterThanOrEqual(2);
  }, T);
});
