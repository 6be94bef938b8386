/** `ncps fsck` as operators run it (the CLI in its own process) against data directories that
 * a real ncps filled from a synthetic upstream, then broke the way crashes and people do: a
 * deleted blob, a stray blob, a corrupted NAR, an uploaded narinfo whose NAR record is gone, a
 * NAR record no narinfo names, a process killed in the middle of a download. Each is found,
 * repaired with --repair (never with --dry-run), and a second run finds nothing. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtemp, readdir, readFile, rm, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fsckChecks, type CheckId } from "../../src/cache/fsck.ts";
import { startNcps, type RunningNcps } from "../../src/compose.ts";
import { loadConfig } from "../../src/config/load.ts";
import { S3BlobStore } from "../../src/storage/s3.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { eventually } from "../helpers/eventually.ts";
import { ncpsCommand, startNcpsProcess } from "../helpers/ncps.ts";
import { testIf } from "../helpers/prereq.ts";
import { s3rverAvailable, startS3rver, type S3rver } from "../helpers/s3rver.ts";
import { createTestDatabase, testServer } from "../helpers/server-databases.ts";
import { makeSyntheticCache, type SyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const T = 60_000;
const redisUrl = process.env.NCPS_TEST_REDIS_URL;
let work: string;
let syn: SyntheticCache;
let up: Upstream;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-fsck-it-"));
  syn = await makeSyntheticCache(join(work, "upstream"));
  up = await startUpstream(syn.dir);
});

afterAll(async () => {
  await up?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

type Args = Record<string, unknown>;

/** The options of one cache, shared by the ncps that fills it and the fsck that checks it
 * (withNcps adds what only serve takes). */
async function localCache(name: string, extra: Args = {}): Promise<{ dataDir: string; args: Args }> {
  const dataDir = join(work, name);
  return {
    dataDir,
    args: {
      "cache-storage-local": dataDir,
      "cache-temp-path": join(dataDir, "tmp"),
      "cache-upstream-url": [up.url],
      ...extra,
    },
  };
}

/** Parsed flags as command-line arguments. */
function argvOf(args: Args): string[] {
  return Object.entries(args).flatMap(([name, value]) => {
    if (value === true) return [`--${name}`];
    if (Array.isArray(value)) return value.flatMap((v) => [`--${name}`, String(v)]);
    return [`--${name}`, String(value)];
  });
}

async function withNcps<T>(args: Args, fn: (ncps: RunningNcps) => Promise<T>): Promise<T> {
  const config = await loadConfig(
    {
      "server-addr": "127.0.0.1:0",
      "cache-hostname": "ncps-test",
      "cache-upstream-public-key": [syn.publicKey],
      "cache-upstream-negative-ttl": "0s",
      "cache-allow-put-verb": true,
      ...args,
    },
    {},
  );
  const ncps = await startNcps(config, silentLogger);
  try {
    return await fn(ncps);
  } finally {
    await ncps.stop();
  }
}

/** Fetch a path's narinfo and NAR through ncps; returns the NAR key ncps stored it under. */
async function fetchPath(ncps: RunningNcps, path: SyntheticPath): Promise<string> {
  const narinfo = await fetch(`${ncps.url}/${path.hash}.narinfo`);
  expect(narinfo.status).toBe(200);
  const key = /^URL: (.*)$/m.exec(await narinfo.text())![1]!;
  const nar = await fetch(`${ncps.url}/${key}`);
  expect(nar.status).toBe(200);
  expect(Buffer.from(await nar.arrayBuffer()).equals(Buffer.from(path.file))).toBe(true);
  return key;
}

interface FsckRun {
  status: number;
  stdout: string;
  stderr: string;
  /** the summary row of a check: found and repaired ("-" when not checked or not repairing) */
  row(id: CheckId): { found: string; repaired: string };
}

async function runFsck(args: Args, ...flags: string[]): Promise<FsckRun> {
  const proc = Bun.spawn([...ncpsCommand(), "fsck", ...argvOf(args), ...flags], {
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" },
  });
  const [stdout, stderr, status] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return {
    status,
    stdout,
    stderr,
    row(id) {
      const title = fsckChecks.find((c) => c.id === id)!.title;
      const line = stdout.split("\n").find((l) => l.startsWith(title) && /\s(\d+|-)\s+(\d+|-)/.test(l.slice(title.length)));
      if (!line) throw new Error(`no summary row for ${id} in:\n${stdout}\n${stderr}`);
      const [found, repaired] = line.slice(title.length).trim().split(/\s+/);
      return { found: found!, repaired: repaired! };
    },
  };
}

/** Every check but `except` found nothing. */
function onlyFound(run: FsckRun, found: Partial<Record<CheckId, number>>) {
  for (const { id } of fsckChecks) {
    const expected = found[id] ?? 0;
    const { found: actual } = run.row(id);
    expect({ id, found: actual === "-" ? 0 : Number(actual) }).toEqual({ id, found: expected });
  }
}

/** What a dry run must leave exactly as it was: every file but the database's, and its rows. */
async function snapshot(dataDir: string): Promise<string> {
  const files: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (!path.startsWith(join(dataDir, "db"))) files.push(`${path} ${(await stat(path)).size}`);
    }
  };
  await walk(dataDir);
  const db = new Database(join(dataDir, "db", "db.sqlite"), { readonly: true });
  try {
    const rows = ["SELECT hash, nar_key FROM narinfos ORDER BY hash", "SELECT key, size FROM nars ORDER BY key", "SELECT name, value FROM stats ORDER BY name"].map((sql) =>
      JSON.stringify(db.query(sql).all()),
    );
    return [...files.sort(), ...rows].join("\n");
  } finally {
    db.close();
  }
}

function sqlite(dataDir: string, sql: string, ...params: string[]): unknown[] {
  const db = new Database(join(dataDir, "db", "db.sqlite"));
  try {
    return db.query(sql).all(...params);
  } finally {
    db.close();
  }
}

/** Report, dry run with --repair, repair, and a second run that finds nothing. */
async function findRepairAndRecheck(args: Args, dataDir: string | null, flags: string[], found: Partial<Record<CheckId, number>>) {
  const report = await runFsck(args, ...flags);
  onlyFound(report, found);
  expect(report.status).toBe(1);
  expect(report.stderr).toContain("run with --repair");

  if (dataDir) {
    const before = await snapshot(dataDir);
    const dry = await runFsck(args, ...flags, "--repair", "--dry-run");
    onlyFound(dry, found);
    expect(dry.status).toBe(1);
    expect(await snapshot(dataDir)).toBe(before);
  }

  const repair = await runFsck(args, ...flags, "--repair");
  onlyFound(repair, found);
  for (const [id, n] of Object.entries(found)) expect(repair.row(id as CheckId).repaired).toBe(String(n));
  expect(repair.status).toBe(0);

  const again = await runFsck(args, ...flags);
  onlyFound(again, {});
  expect(again.stdout).toContain("no problems found");
  expect(again.status).toBe(0);
}

describe("ncps fsck on SQLite and local storage", () => {
  test("a healthy cache: nothing found, exit status 0", async () => {
    const { args } = await localCache("healthy");
    const path = await syn.add("healthy");
    await withNcps(args, (ncps) => fetchPath(ncps, path));
    const run = await runFsck(args, "--verify-content", "--stray-grace", "0s");
    onlyFound(run, {});
    expect(run.status).toBe(0);
  }, T);

  test("a deleted blob: the record is forgotten, the narinfo stays, the NAR is fetched again", async () => {
    const { dataDir, args } = await localCache("deleted-blob");
    const path = await syn.add("deleted-blob");
    const key = await withNcps(args, (ncps) => fetchPath(ncps, path));
    await unlink(join(dataDir, key));
    await findRepairAndRecheck(args, dataDir, [], { "nar-bytes-missing": 1 });
    const hits = up.hits(`/${path.narinfo.url}`);
    await withNcps(args, async (ncps) => {
      expect(await fetchPath(ncps, path)).toBe(key);
    });
    expect(up.hits(`/${path.narinfo.url}`)).toBe(hits + 1);
  }, T);

  test("an upstream URL with a user and password: its narinfos are still ones to fetch again", async () => {
    const withCredentials = up.url.replace("://", "://alice:s3cret@");
    const { dataDir, args } = await localCache("credentials-blob", { "cache-upstream-url": [withCredentials] });
    const path = await syn.add("credentials-blob");
    const key = await withNcps(args, (ncps) => fetchPath(ncps, path));
    await unlink(join(dataDir, key));
    await findRepairAndRecheck(args, dataDir, [], { "nar-bytes-missing": 1 });
    // the repair kept the narinfo (its NAR can be fetched again): it is not asked for again
    const narInfoHits = up.hits(`/${path.hash}.narinfo`);
    await withNcps(args, async (ncps) => {
      expect(await fetchPath(ncps, path)).toBe(key);
    });
    expect(up.hits(`/${path.hash}.narinfo`)).toBe(narInfoHits);
  }, T);

  test("a stray blob: left alone within the grace period, removed past it", async () => {
    const { dataDir, args } = await localCache("stray");
    const path = await syn.add("stray-neighbour");
    await withNcps(args, (ncps) => fetchPath(ncps, path));
    await writeFile(join(dataDir, "nar", "0000000000000000000000000000000000000000000000000000.nar"), "nobody records me");
    onlyFound(await runFsck(args), {}); // default grace: 24h
    await findRepairAndRecheck({ ...args, "stray-grace": "0s" }, dataDir, [], { "stray-blob": 1 });
    expect(await readdir(join(dataDir, "nar"))).toHaveLength(1);
  }, T);

  test("a corrupted NAR: found only with --verify-content, then forgotten", async () => {
    const { dataDir, args } = await localCache("corrupt");
    const path = await syn.add("corrupt", { compression: "zstd", size: 64 * 1024 });
    const key = await withNcps(args, (ncps) => fetchPath(ncps, path));
    const bytes = await readFile(join(dataDir, key));
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    await writeFile(join(dataDir, key), bytes);
    const plain = await runFsck(args);
    onlyFound(plain, {});
    expect(plain.row("corrupt-nar").found).toBe("-");
    await findRepairAndRecheck(args, dataDir, ["--verify-content"], { "corrupt-nar": 1 });
    await withNcps(args, async (ncps) => {
      expect(await fetchPath(ncps, path)).toBe(key);
    });
  }, T);

  test("an uploaded narinfo whose NAR record was removed, and a NAR record no narinfo names", async () => {
    const { dataDir, args } = await localCache("records");
    const upload = await syn.add("uploaded");
    const unnamed = await syn.add("unnamed");
    const keys = await withNcps(args, async (ncps) => {
      // an upload: NAR, then narinfo (upstream null)
      const put = await fetch(`${ncps.url}/${upload.narinfo.url}`, { method: "PUT", body: upload.file });
      expect(put.status).toBeLessThan(300);
      const putInfo = await fetch(`${ncps.url}/${upload.hash}.narinfo`, { method: "PUT", body: upload.text });
      expect(putInfo.status).toBeLessThan(300);
      return { uploaded: upload.narinfo.url, unnamed: await fetchPath(ncps, unnamed) };
    });
    // records removed behind ncps's back (the running total does not follow: fsck notices)
    sqlite(dataDir, "DELETE FROM nars WHERE key = ?", keys.uploaded);
    sqlite(dataDir, "DELETE FROM narinfos WHERE hash = ?", unnamed.hash);
    await findRepairAndRecheck(args, dataDir, [], { "narinfo-without-nar": 1, "nar-without-narinfo": 1, "stored-bytes": 1 });
    // both NARs' bytes went with them
    expect(await readdir(join(dataDir, "nar"))).toEqual([]);
    expect(sqlite(dataDir, "SELECT hash FROM narinfos")).toEqual([]);
  }, T);

  testIf(redisUrl !== undefined, "NCPS_TEST_REDIS_URL is not set")(
    "--repair tells the replicas through Redis: a running ncps stops serving its in-memory copy of a removed narinfo at once",
    async () => {
      const redis = { "cache-redis-addrs": [new URL(redisUrl!).host], "cache-lock-redis-key-prefix": `ncps-fsck-${crypto.randomUUID()}:` };
      const { dataDir, args } = await localCache("broadcast", redis);
      const upload = await syn.add("uploaded-then-lost");
      await unlink(join(syn.dir, `${upload.hash}.narinfo`)); // only the upload has it, not the upstream
      await withNcps(args, async (ncps) => {
        expect((await fetch(`${ncps.url}/${upload.narinfo.url}`, { method: "PUT", body: upload.file })).status).toBeLessThan(300);
        expect((await fetch(`${ncps.url}/${upload.hash}.narinfo`, { method: "PUT", body: upload.text })).status).toBeLessThan(300);
        expect((await fetch(`${ncps.url}/${upload.hash}.narinfo`)).status).toBe(200); // now held in memory
        // its NAR record lost behind ncps's back: fsck removes the narinfo that names it
        sqlite(dataDir, "DELETE FROM nars WHERE key = ?", upload.narinfo.url);
        const run = await runFsck(args, "--repair");
        expect(run.row("narinfo-without-nar")).toEqual({ found: "1", repaired: "1" });
        // pub/sub delivery takes a moment, far less than the 30 s the copy would live
        const until = Date.now() + 5_000;
        let status = 200;
        while (status === 200 && Date.now() < until) {
          status = (await fetch(`${ncps.url}/${upload.hash}.narinfo`)).status;
          if (status === 200) await Bun.sleep(50);
        }
        expect(status).toBe(404);
      });
    },
    T,
  );

  test("a download in flight is not reported, even with no grace for strays", async () => {
    const { dataDir, args } = await localCache("in-flight", { "stray-grace": "0s" });
    const path = await syn.add("in-flight", { size: 256 * 1024 });
    let release = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    up.fault(`/${path.narinfo.url}`, { kind: "hold", afterBytes: 64 * 1024, until: held });
    try {
      await withNcps(args, async (ncps) => {
        const narinfo = await fetch(`${ncps.url}/${path.hash}.narinfo`);
        const key = /^URL: (.*)$/m.exec(await narinfo.text())![1]!;
        const nar = await fetch(`${ncps.url}/${key}`);
        const reader = nar.body!.getReader();
        await reader.read(); // the download is running: its first bytes reached us
        const run = await runFsck(args);
        onlyFound(run, {});
        expect(run.status).toBe(0);
        release();
        while (!(await reader.read()).done);
      });
    } finally {
      release();
      up.fault(`/${path.narinfo.url}`, null);
    }
    onlyFound(await runFsck(args, "--verify-content"), {});
    expect(await readdir(join(dataDir, "nar"))).toHaveLength(1);
  }, T);

  test("a process killed with SIGKILL in the middle of a download", async () => {
    const { dataDir, args } = await localCache("sigkill");
    const path = await syn.add("killed", { size: 256 * 1024 });
    let release = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    up.fault(`/${path.narinfo.url}`, { kind: "hold", afterBytes: 64 * 1024, until: held });
    const { "cache-storage-local": _, "cache-temp-path": __, ...rest } = args;
    const proc = await startNcpsProcess({ dataDir, args: argvOf({ ...rest, "cache-upstream-public-key": [syn.publicKey] }) });
    try {
      const narinfo = await fetch(`${proc.url}/${path.hash}.narinfo`);
      const key = /^URL: (.*)$/m.exec(await narinfo.text())![1]!;
      const download = fetch(`${proc.url}/${key}`).then((r) => r.arrayBuffer()).catch(() => null);
      // in flight once its temp file holds the bytes the upstream sent before holding
      await eventually(
        "the download starting",
        async () => {
          const files = await readdir(join(dataDir, "tmp")).catch(() => [] as string[]);
          const sizes = await Promise.all(files.map((f) => stat(join(dataDir, "tmp", f)).then((s) => s.size, () => 0)));
          return sizes.some((s) => s >= 64 * 1024);
        },
        { deadlineMs: 20_000 },
      );
      proc.proc.kill("SIGKILL");
      await proc.proc.exited;
      await download;
    } finally {
      release();
      up.fault(`/${path.narinfo.url}`, null);
    }
    await findRepairAndRecheck(args, dataDir, [], { "temp-file": 1 });
    expect(await readdir(join(dataDir, "tmp"))).toEqual([]);
  }, T);
});

const servers = { postgres: await testServer("postgres"), mysql: await testServer("mysql") };

describe("ncps fsck on a database server", () => {
  for (const dialect of ["postgres", "mysql"] as const) {
    const server = servers[dialect];
    testIf(server.url !== null, server.problem ?? "")(`${dialect}: a deleted blob and a stray`, async () => {
      const db = await createTestDatabase(server.url!);
      try {
        const { dataDir, args } = await localCache(`server-${dialect}`, { "cache-database-url": db.url, "stray-grace": "0s" });
        const path = await syn.add(`server-${dialect}`);
        const key = await withNcps(args, (ncps) => fetchPath(ncps, path));
        await unlink(join(dataDir, key));
        await writeFile(join(dataDir, "nar", "1111111111111111111111111111111111111111111111111111.nar"), "stray");
        await findRepairAndRecheck(args, null, [], { "nar-bytes-missing": 1, "stray-blob": 1 });
        const [row] = await db.query<{ n: number | string }>("SELECT COUNT(*) AS n FROM nars");
        expect(Number(row!.n)).toBe(0);
      } finally {
        await db.drop();
      }
    }, T);
  }
});

describe("ncps fsck on S3 storage", () => {
  let s3: S3rver | null = null;
  beforeAll(async () => {
    if (s3rverAvailable) s3 = await startS3rver();
  });
  afterAll(async () => {
    await s3?.stop();
  });

  testIf(s3rverAvailable, "s3rver is not installed")("a deleted object and a stray object", async () => {
    const dataDir = join(work, "s3");
    const s3Opts = { bucket: s3!.bucket, endpoint: s3!.endpoint, accessKeyId: s3!.accessKeyId, secretAccessKey: s3!.secretAccessKey, forcePathStyle: true, prefix: "fsck" };
    const args: Args = {
      "cache-storage-s3-bucket": s3Opts.bucket,
      "cache-storage-s3-endpoint": s3Opts.endpoint,
      "cache-storage-s3-access-key-id": s3Opts.accessKeyId,
      "cache-storage-s3-secret-access-key": s3Opts.secretAccessKey,
      "cache-storage-s3-force-path-style": true,
      "cache-storage-s3-prefix": s3Opts.prefix,
      "cache-database-url": `sqlite:${join(dataDir, "db.sqlite")}`,
      "cache-temp-path": join(dataDir, "tmp"),
      "cache-upstream-url": [up.url],
      "stray-grace": "0s",
    };
    const kept = await syn.add("s3-kept");
    const lost = await syn.add("s3-lost");
    const lostKey = await withNcps(args, async (ncps) => {
      await fetchPath(ncps, kept);
      return fetchPath(ncps, lost);
    });
    const store = new S3BlobStore(s3Opts);
    expect(await store.delete(lostKey)).toBe(true);
    const strayFile = join(work, "s3-stray");
    await writeFile(strayFile, "stray");
    await store.putFile("nar/2222222222222222222222222222222222222222222222222222.nar", strayFile);
    await findRepairAndRecheck(args, null, [], { "nar-bytes-missing": 1, "stray-blob": 1 });
    const left: string[] = [];
    for await (const item of store.list("nar/")) left.push(item.key);
    expect(left).toHaveLength(1);
  }, T);
});
