/** Pins over HTTP and on the command line, against a synthetic upstream whose paths reference
 * each other (a -> b -> c): pinning the root fetches the whole closure in the background, GET
 * /pins says how much of it is here, the routes take the put token (else the get token, else
 * follow --cache-allow-put-verb), and `ncps pin add|rm|ls` works with or without a server. */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PinStatus } from "../../src/cache/pins.ts";
import type { RunningNcps } from "../../src/compose.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { makeSyntheticCache, type SyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

/** Cleanups of the running test, run (last first) after it whatever its outcome. */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => {});
});

const PUT_TOKEN = "put-secret";
const GET_TOKEN = "get-secret";
const bearer = (token?: string): Record<string, string> => (token ? { authorization: `Bearer ${token}` } : {});
const baseName = (p: SyntheticPath) => p.storePath.slice("/nix/store/".length);

interface Fixture {
  root: string;
  synthetic: SyntheticCache;
  upstream: Upstream;
  /** c, b -> c, a -> b (and itself, as Nix paths often do) */
  a: SyntheticPath;
  b: SyntheticPath;
  c: SyntheticPath;
  dataDir: string;
  databaseUrl: string;
  start(args?: Record<string, unknown>): Promise<RunningNcps>;
}

async function fixture(): Promise<Fixture> {
  const root = await mkdtemp(join(tmpdir(), "ncps-pins-"));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  const synthetic = await makeSyntheticCache(join(root, "upstream"));
  const c = await synthetic.add("c", { size: 3000 });
  const b = await synthetic.add("b", { size: 2000, references: [baseName(c)] });
  const a = await synthetic.add("a", { size: 1000, compression: "zstd", references: [baseName(b)], edit: (n) => ({ ...n, references: [...n.references!, n.storePath.slice(11)] }) });
  const upstream = await startUpstream(synthetic.dir);
  cleanups.push(() => upstream.stop());
  const dataDir = join(root, "ncps");
  const databaseUrl = `sqlite:${join(dataDir, "db.sqlite")}`;
  const start = async (args: Record<string, unknown> = {}) => {
    const ncps = await startInProcess(dataDir, {
      "cache-upstream-url": upstream.url,
      "cache-upstream-public-key": synthetic.publicKey,
      "cache-database-url": databaseUrl,
      ...args,
    });
    cleanups.push(() => ncps.stop());
    return ncps;
  };
  return { root, synthetic, upstream, a, b, c, dataDir, databaseUrl, start };
}

/** Every warming run and the downloads it started are over. */
async function settled(ncps: RunningNcps) {
  await ncps.pins.drain();
  await ncps.cache.drain();
}

async function listPins(ncps: RunningNcps, token?: string): Promise<PinStatus[]> {
  const res = await fetch(`${ncps.url}/pins`, { headers: bearer(token) });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("application/json");
  return (await res.json()) as PinStatus[];
}

const pinRequest = (ncps: RunningNcps, method: "POST" | "DELETE", hash: string, token?: string) =>
  fetch(`${ncps.url}/pin/${hash}.narinfo`, { method, headers: bearer(token) });

const narPath = (p: SyntheticPath) => `/${p.narinfo.url}`;

describe("pins over HTTP", () => {
  test("pinning the root fetches its whole closure in the background; GET /pins reports it present", async () => {
    const f = await fixture();
    const ncps = await f.start({ "cache-allow-put-verb": true });

    const res = await pinRequest(ncps, "POST", f.a.hash);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ hash: f.a.hash, storePath: f.a.storePath, added: true });
    await settled(ncps);

    for (const p of [f.a, f.b, f.c]) expect([p.storePath, f.upstream.hits(narPath(p))]).toEqual([p.storePath, 1]);
    const bytes = f.a.file.length + f.b.file.length + f.c.file.length;
    const [pin, ...rest] = await listPins(ncps);
    expect(rest).toEqual([]);
    expect(pin).toMatchObject({ hash: f.a.hash, storePath: f.a.storePath, warming: false });
    expect(pin!.closure).toEqual({ paths: 3, narInfos: 3, present: 3, bytes, knownBytes: bytes, complete: true });

    // Pinning again changes nothing and fetches nothing.
    const again = await pinRequest(ncps, "POST", f.a.hash);
    expect(await again.json()).toMatchObject({ added: false });
    await settled(ncps);
    for (const p of [f.a, f.b, f.c]) expect(f.upstream.hits(narPath(p))).toBe(1);
  });

  test("while a NAR of the closure is still downloading, GET /pins shows the pin warming and what is present", async () => {
    const f = await fixture();
    let release!: () => void;
    f.upstream.fault(narPath(f.c), { kind: "hold", afterBytes: 100, until: new Promise<void>((r) => (release = r)) });
    const ncps = await f.start({ "cache-allow-put-verb": true });

    expect((await pinRequest(ncps, "POST", f.a.hash)).status).toBe(200);
    // a and b are fetched while c is held: wait for those two to be stored.
    let pin: PinStatus | undefined;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      [pin] = await listPins(ncps);
      if (pin!.closure.present === 2) break;
      await Bun.sleep(20);
    }
    expect(pin).toMatchObject({ warming: true, closure: { paths: 3, narInfos: 3, present: 2, complete: false } });
    expect(pin!.closure.bytes).toBe(f.a.file.length + f.b.file.length);

    release();
    await settled(ncps);
    const [done] = await listPins(ncps);
    expect(done).toMatchObject({ warming: false, closure: { present: 3, complete: true } });
  });

  test("a path no upstream has is a 404; a reference no upstream has stays missing in the presence count", async () => {
    const f = await fixture();
    const ghost = "0".repeat(32);
    const d = await f.synthetic.add("d", { references: [`${ghost}-ghost`] });
    const ncps = await f.start({ "cache-allow-put-verb": true });

    expect((await pinRequest(ncps, "POST", "1".repeat(32))).status).toBe(404);
    expect((await pinRequest(ncps, "POST", "not-a-hash")).status).toBe(400);

    expect((await pinRequest(ncps, "POST", d.hash)).status).toBe(200);
    await settled(ncps);
    const [pin] = await listPins(ncps);
    expect(pin).toMatchObject({ hash: d.hash, warming: false });
    expect(pin!.closure).toMatchObject({ paths: 2, narInfos: 1, present: 1, complete: false });
  });

  test("DELETE unpins; unpinning what is not pinned says so", async () => {
    const f = await fixture();
    const ncps = await f.start({ "cache-allow-put-verb": true });
    await pinRequest(ncps, "POST", f.b.hash);
    await settled(ncps);

    const res = await pinRequest(ncps, "DELETE", f.b.hash);
    expect([res.status, await res.json()]).toEqual([200, { hash: f.b.hash, removed: true }]);
    expect(await listPins(ncps)).toEqual([]);
    expect(await (await pinRequest(ncps, "DELETE", f.b.hash)).json()).toEqual({ hash: f.b.hash, removed: false });
    // The closure stays cached: unpinning only makes it evictable.
    expect((await fetch(`${ncps.url}${narPath(f.c)}`)).status).toBe(200);
  });
});

describe("who may use the pin routes", () => {
  const statuses = async (ncps: RunningNcps, hash: string, token?: string) => [
    (await pinRequest(ncps, "POST", hash, token)).status,
    (await fetch(`${ncps.url}/pins`, { headers: bearer(token) })).status,
    (await fetch(`${ncps.url}/pins`, { method: "HEAD", headers: bearer(token) })).status,
    (await pinRequest(ncps, "DELETE", hash, token)).status,
  ];

  test("with a put token: only the put token, whatever --cache-allow-put-verb says", async () => {
    const f = await fixture();
    const ncps = await f.start({ "cache-put-token": PUT_TOKEN, "cache-get-token": GET_TOKEN });
    expect(await statuses(ncps, f.c.hash)).toEqual([401, 401, 401, 401]);
    expect(await statuses(ncps, f.c.hash, GET_TOKEN)).toEqual([401, 401, 401, 401]);
    expect(await statuses(ncps, f.c.hash, PUT_TOKEN)).toEqual([200, 200, 200, 200]);
    await settled(ncps);
  });

  test("with only a get token: the get token", async () => {
    const f = await fixture();
    const ncps = await f.start({ "cache-get-token": GET_TOKEN });
    expect(await statuses(ncps, f.c.hash)).toEqual([401, 401, 401, 401]);
    expect(await statuses(ncps, f.c.hash, "wrong")).toEqual([401, 401, 401, 401]);
    expect(await statuses(ncps, f.c.hash, GET_TOKEN)).toEqual([200, 200, 200, 200]);
    await settled(ncps);
  });

  test("with no token: 405 unless --cache-allow-put-verb", async () => {
    const f = await fixture();
    const closed = await f.start();
    expect(await statuses(closed, f.c.hash)).toEqual([405, 405, 405, 405]);
    expect(await listPinsIn(f)).toEqual([]);
    await closed.stop();
    const open = await f.start({ "cache-allow-put-verb": true });
    expect(await statuses(open, f.c.hash)).toEqual([200, 200, 200, 200]);
    await settled(open);
  });
});

/** The pins recorded in the fixture's database, through the CLI. */
async function listPinsIn(f: Fixture): Promise<string[]> {
  const { stdout, status } = await cli(["pin", "ls", "--cache-database-url", f.databaseUrl]);
  expect(status).toBe(0);
  return stdout.trim() === "no pins" ? [] : stdout.trim().split("\n");
}

const mainPath = join(import.meta.dir, "..", "..", "src", "main.ts");

async function cli(args: string[]) {
  const home = await mkdtemp(join(tmpdir(), "ncps-pins-home-"));
  cleanups.push(() => rm(home, { recursive: true, force: true }));
  const proc = Bun.spawn(["bun", mainPath, ...args], {
    // A private home: no config file of the machine's user leaks in.
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home, XDG_CONFIG_HOME: join(home, "config") },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, status] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { stdout, stderr, status };
}

/** Each CLI run starts a process (about a second on a busy 2-core machine), and these tests make several. */
const CLI_TEST_MS = 60_000;

describe("ncps pin add|rm|ls", () => {
  test("without a server: add records the pin, a server fetches the closure when it starts; ls and rm", async () => {
    const f = await fixture();
    // The database exists once a server has run (it also applies the migrations).
    await (await f.start()).stop();
    const db = ["--cache-database-url", f.databaseUrl];

    const unknownHash = await cli(["pin", "add", f.a.hash, ...db]);
    expect(unknownHash.status).toBe(1);
    expect(unknownHash.stderr).toContain("is not in the cache: name its full store path");

    const added = await cli(["pin", "add", f.a.storePath, ...db]);
    expect([added.status, added.stderr]).toEqual([0, ""]);
    expect(added.stdout).toContain(`pinned ${f.a.storePath}`);
    expect(added.stdout).toContain("a server fetches it when it starts");
    expect((await cli(["pin", "add", f.a.storePath, ...db])).stdout).toContain("was already pinned");
    expect(await listPinsIn(f)).toEqual([expect.stringMatching(new RegExp(`^${f.a.storePath}  0/1 paths  0\\.0 MiB  incomplete  pinned `))]);

    const ncps = await f.start();
    await settled(ncps);
    for (const p of [f.a, f.b, f.c]) expect(f.upstream.hits(narPath(p))).toBe(1);
    expect(await listPinsIn(f)).toEqual([expect.stringMatching(new RegExp(`^${f.a.storePath}  3/3 paths  .* complete  pinned `))]);

    const removed = await cli(["pin", "rm", baseName(f.a), ...db]);
    expect(removed.stdout.trim()).toBe(`unpinned ${f.a.hash}`);
    expect((await cli(["pin", "rm", f.a.hash, ...db])).stdout.trim()).toBe(`${f.a.hash} was not pinned`);
    expect(await listPinsIn(f)).toEqual([]);
  }, CLI_TEST_MS);

  test("with --server-url: add pins through the server, which fetches the closure at once; ls and rm too", async () => {
    const f = await fixture();
    const ncps = await f.start({ "cache-put-token": PUT_TOKEN });
    const server = ["--server-url", ncps.url];

    const refused = await cli(["pin", "add", f.a.storePath, ...server]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain("401");

    const added = await cli(["pin", "add", f.a.storePath, ...server, "--cache-put-token", PUT_TOKEN]);
    expect([added.status, added.stderr]).toEqual([0, ""]);
    expect(added.stdout).toContain(`pinned ${f.a.storePath}`);
    await settled(ncps);
    for (const p of [f.a, f.b, f.c]) expect(f.upstream.hits(narPath(p))).toBe(1);

    const listed = await cli(["pin", "ls", ...server, "--cache-put-token", PUT_TOKEN]);
    expect(listed.stdout).toMatch(new RegExp(`^${f.a.storePath}  3/3 paths  .* complete  pinned `));
    const removed = await cli(["pin", "rm", f.a.storePath, ...server, "--cache-put-token", PUT_TOKEN]);
    expect(removed.stdout.trim()).toBe(`unpinned ${f.a.hash}`);
  }, CLI_TEST_MS);

  test("a malformed path or a missing argument is one line and exit status 1", async () => {
    const bad = await cli(["pin", "add", "/nix/store/short-name"]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^ncps: store path: invalid hash part .*\(expected a store path or its 32-character hash\)\n$/);
    const missing = await cli(["pin", "rm"]);
    expect([missing.status, missing.stderr]).toEqual([1, "ncps: missing path for ncps pin rm (see ncps pin rm --help)\n"]);
  }, CLI_TEST_MS);
});

describe("pins and eviction", () => {
  /** Stored here, asked without any upstream (the /upload/ prefix answers from storage only). */
  const held = async (ncps: RunningNcps, p: SyntheticPath) => (await fetch(`${ncps.url}/upload/${p.hash}.narinfo`)).status === 200;

  /** A client fetching `p` (narinfo, then NAR) through ncps; then the pass its commit started. */
  async function fetchThrough(ncps: RunningNcps, p: SyntheticPath) {
    const narinfo = await (await fetch(`${ncps.url}/${p.hash}.narinfo`)).text();
    const nar = await fetch(`${ncps.url}/${/^URL: (.*)$/m.exec(narinfo)![1]}`);
    expect(Buffer.from(await nar.arrayBuffer()).equals(Buffer.from(p.file))).toBe(true);
    await settled(ncps);
    await ncps.eviction!.trigger("manual"); // the pass the commit started, or one under the cap
    await ncps.eviction!.flushPendingDeletions();
  }

  test("a closure pinned over HTTP survives passes that evict everything else; unpinned, it is evictable again", async () => {
    const f = await fixture();
    const [x, y] = [await f.synthetic.add("x", { size: 4096 }), await f.synthetic.add("y", { size: 4096 })];
    // The pinned closure (about 6 KB) fits; any other path on top passes the cap.
    const ncps = await f.start({ "cache-allow-put-verb": true, "cache-max-size": "9000" });

    expect((await pinRequest(ncps, "POST", f.a.hash)).status).toBe(200);
    await settled(ncps);
    for (const p of [x!, y!]) {
      await fetchThrough(ncps, p);
      expect(await held(ncps, p)).toBe(false); // evicted by the pass its own commit started
      expect(await Promise.all([f.a, f.b, f.c].map((q) => held(ncps, q)))).toEqual([true, true, true]);
    }
    const [pin] = await listPins(ncps);
    expect(pin!.closure).toMatchObject({ paths: 3, present: 3, complete: true });
    for (const p of [f.a, f.b, f.c]) expect(f.upstream.hits(narPath(p))).toBe(1); // never fetched again

    expect((await pinRequest(ncps, "DELETE", f.a.hash)).status).toBe(200);
    await fetchThrough(ncps, x!);
    expect(await Promise.all([f.a, f.b, f.c].map((q) => held(ncps, q)))).toContain(false);
  });
});
