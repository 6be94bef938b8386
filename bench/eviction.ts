#!/usr/bin/env bun
/** One LRU eviction pass over 1,000,000 recorded NARs, on SQLite and on PostgreSQL: its time,
 * the peak RSS of the ncps process running it, and the narinfo-hit latency (p50/p99) of that
 * ncps while the pass runs against the same ncps idle.
 *
 *   bun bench/eviction.ts [--records 1000000] [--postgres postgres://...] [--only sqlite|postgres] [--connections 16] [--idle-seconds 10]
 *   (BENCH_BATCH=25 sets the pass's batch size, to compare)
 *
 * PostgreSQL runs when --postgres (a database the benchmark may create databases beside) or
 * NCPS_TEST_POSTGRES_URL is given. Records are inserted directly in batches: one narinfo per
 * NAR of 100 KB, none with bytes in storage (removing a missing blob is a no-op, and the
 * pass deletes bytes only after its grace). The cap is set just under the recorded total, so
 * the pass evicts down to the low-water mark: about 10% of the NARs.
 *
 * The ncps and its eviction run in a child process (as in production, the pass shares the
 * event loop with serving); this process is the HTTP client, hitting the 1,000 most recently
 * used narinfos (never evicted) from `--connections` keep-alive connections. Prints one JSON
 * line per engine. */
import { Database } from "bun:sqlite";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { Eviction } from "../src/cache/eviction.ts";
import { HotNarInfos } from "../src/cache/hot-narinfos.ts";
import { StoredNars } from "../src/cache/stored-nars.ts";
import { openMetadataStore } from "../src/db/open.ts";
import { encodeNix32 } from "../src/nix/nix32.ts";
import { LocalBlobStore } from "../src/storage/local.ts";
import { silentLogger } from "../src/telemetry/logger.ts";
import { startInProcess } from "../test/helpers/ncps.ts";

const NAR_SIZE = 100 * 1024;
const BATCH = 20_000;
const HOT = 1000;

function hashOf(i: number): string {
  return encodeNix32(new Bun.CryptoHasher("sha1").update(`path-${i}`).digest());
}
function narKeyOf(i: number): string {
  return `nar/${encodeNix32(new Bun.CryptoHasher("sha256").update(`nar-${i}`).digest())}.nar`;
}

/** The columns of record `i`, as the store writes them. */
function record(i: number, base: number) {
  const hash = hashOf(i);
  const key = narKeyOf(i);
  const storePath = `/nix/store/${hash}-bench-${i}`;
  const fileHash = `sha256:${key.slice(4, 56)}`;
  const text = `StorePath: ${storePath}\nURL: ${key}\nCompression: none\nFileHash: ${fileHash}\nFileSize: ${NAR_SIZE}\nNarHash: ${fileHash}\nNarSize: ${NAR_SIZE}\nReferences: \nSig: bench-1:c2lnbmF0dXJl\n`;
  return { hash, key, storePath, fileHash, text, at: base + i };
}

async function fillSqlite(path: string, n: number): Promise<void> {
  const store = await openMetadataStore(`sqlite:${path}`, { migrate: true });
  await store.close();
  const db = new Database(path);
  db.run("PRAGMA journal_mode = WAL");
  db.run("PRAGMA synchronous = OFF");
  const narinfo = db.prepare(`INSERT INTO narinfos (hash, store_path, text, nar_key, upstream, upstream_nar_url, compression,
    file_hash, file_size, nar_hash, nar_size, created_at, last_accessed_at) VALUES (?, ?, ?, ?, NULL, NULL, 'none', ?, ?, ?, ?, ?, ?)`);
  const nar = db.prepare("INSERT INTO nars (key, size, file_hash, nar_hash, created_at, last_accessed_at) VALUES (?, ?, ?, ?, ?, ?)");
  const base = Date.now() - n - 1000;
  for (let from = 0; from < n; from += BATCH) {
    db.transaction(() => {
      for (let i = from; i < Math.min(n, from + BATCH); i++) {
        const r = record(i, base);
        narinfo.run(r.hash, r.storePath, r.text, r.key, r.fileHash, NAR_SIZE, r.fileHash, NAR_SIZE, r.at, r.at);
        nar.run(r.key, NAR_SIZE, r.fileHash, r.fileHash, r.at, r.at);
      }
    })();
  }
  db.run(`UPDATE stats SET value = ${n * NAR_SIZE} WHERE name = 'stored_bytes'`);
  db.close();
}

async function fillPostgres(url: string, n: number): Promise<void> {
  const store = await openMetadataStore(url, { migrate: true });
  await store.close();
  const sql = postgres(url, { onnotice: () => {} });
  const base = Date.now() - n - 1000;
  for (let from = 0; from < n; from += BATCH) {
    const rows: ReturnType<typeof record>[] = [];
    for (let i = from; i < Math.min(n, from + BATCH); i++) rows.push(record(i, base));
    const col = <K extends keyof (typeof rows)[number]>(k: K) => rows.map((r) => r[k]);
    await sql.unsafe(
      `INSERT INTO narinfos (hash, store_path, text, nar_key, compression, file_hash, file_size, nar_hash, nar_size, created_at, last_accessed_at)
       SELECT h, p, t, k, 'none', f, ${NAR_SIZE}, f, ${NAR_SIZE}, a, a FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[]) AS x(h, p, t, k, f, a)`,
      [col("hash"), col("storePath"), col("text"), col("key"), col("fileHash"), col("at")] as never[],
    );
    await sql.unsafe(
      `INSERT INTO nars (key, size, file_hash, nar_hash, created_at, last_accessed_at)
       SELECT k, ${NAR_SIZE}, f, f, a, a FROM unnest($1::text[], $2::text[], $3::bigint[]) AS x(k, f, a)`,
      [col("key"), col("fileHash"), col("at")] as never[],
    );
  }
  await sql.unsafe(`UPDATE stats SET value = ${n * NAR_SIZE} WHERE name = 'stored_bytes'`);
  await sql.unsafe("ANALYZE");
  await sql.end();
}

function vmHwmMb(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(require("node:fs").readFileSync("/proc/self/status", "utf8"));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

// ---- child: ncps, and an eviction pass over its database when told ----

async function child(databaseUrl: string, dataDir: string): Promise<void> {
  const ncps = await startInProcess(dataDir, { "cache-database-url": databaseUrl, "cache-upstream-url": ["http://127.0.0.1:9"] });
  const db = await openMetadataStore(databaseUrl, { migrate: false });
  const store = new LocalBlobStore(dataDir);
  const nars = new StoredNars({ db, store, hot: new HotNarInfos(), logger: silentLogger });
  const say = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
  say({ url: ncps.url, rssIdleMb: vmHwmMb() });
  for await (const line of console) {
    if (line === "go") {
      // a cap just under what is stored: the pass evicts down to 90% of it
      const maxBytes = (await db.storedBytes()) - 1;
      const batchSize = process.env.BENCH_BATCH ? Number(process.env.BENCH_BATCH) : undefined;
      const eviction = new Eviction({ db, nars, isDownloading: (k) => ncps.cache.isDownloading(k), maxBytes, lockTtlMs: 30 * 60_000, logger: silentLogger, batchSize });
      const started = performance.now();
      const result = await eviction.trigger("manual");
      say({ result, seconds: (performance.now() - started) / 1000, rssPeakMb: vmHwmMb() });
    } else if (line === "quit") {
      process.exit(0); // evicted bytes never existed: no pending deletions to wait for
    }
  }
}

// ---- parent: fill, then measure ----

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;
}

/** Hits from `connections` loops until `until` settles; latencies in ms. */
async function hitLoop(url: string, hashes: string[], connections: number, until: Promise<unknown>): Promise<{ p50: number; p99: number; requests: number; errors: number }> {
  let done = false;
  void until.then(() => (done = true));
  const latencies: number[] = [];
  let errors = 0;
  await Promise.all(
    Array.from({ length: connections }, async (_, c) => {
      for (let k = c; !done; k += connections) {
        const t = performance.now();
        const res = await fetch(`${url}/${hashes[k % hashes.length]}.narinfo`);
        await res.arrayBuffer();
        if (res.status !== 200) errors++;
        latencies.push(performance.now() - t);
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  const round = (x: number) => Math.round(x * 100) / 100;
  return { p50: round(percentile(latencies, 50)), p99: round(percentile(latencies, 99)), requests: latencies.length, errors };
}

async function measure(engine: string, databaseUrl: string, n: number, connections: number, idleSeconds: number, work: string) {
  const dataDir = join(work, `data-${engine}`);
  const proc = Bun.spawn(["bun", import.meta.path, "--child", databaseUrl, dataDir], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  const lines = (async function* () {
    let buf = "";
    for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
      buf += new TextDecoder().decode(chunk);
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        yield JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
  })();
  const { value: ready } = await lines.next();
  const hot = Array.from({ length: HOT }, (_, i) => hashOf(n - 1 - i));
  await hitLoop(ready.url, hot, connections, Bun.sleep(1000)); // warm
  const idle = await hitLoop(ready.url, hot, connections, Bun.sleep(idleSeconds * 1000));
  // first a pass alone (its time), then a second one while the client hits (its latency)
  proc.stdin.write("go\n");
  proc.stdin.flush();
  const { value: alone } = await lines.next();
  proc.stdin.write("go\n");
  proc.stdin.flush();
  const passDone = lines.next();
  const during = await hitLoop(ready.url, hot, connections, passDone);
  const { value: pass } = await passDone;
  proc.stdin.write("quit\n");
  proc.stdin.flush();
  await proc.exited;
  return {
    engine,
    records: n,
    passSeconds: Math.round(alone.seconds * 10) / 10,
    evictedNarInfos: alone.result.narInfos,
    evictedNars: alone.result.nars,
    freedGiB: Math.round((alone.result.freedBytes / 2 ** 30) * 10) / 10,
    loadedPass: { seconds: Math.round(pass.seconds * 10) / 10, narInfos: pass.result.narInfos },
    rssIdleMb: ready.rssIdleMb,
    rssPeakMb: pass.rssPeakMb,
    hitIdle: idle,
    hitDuringPass: during,
  };
}

if (process.argv[2] === "--child") {
  await child(process.argv[3]!, process.argv[4]!);
} else {
  const { values } = parseArgs({
    options: {
      records: { type: "string", default: "1000000" },
      postgres: { type: "string", default: process.env.NCPS_TEST_POSTGRES_URL },
      connections: { type: "string", default: "16" },
      "idle-seconds": { type: "string", default: "10" },
      only: { type: "string" },
    },
  });
  const n = Number(values.records);
  const connections = Number(values.connections);
  const idleSeconds = Number(values["idle-seconds"]);
  const work = await mkdtemp(join(tmpdir(), "ncps-evictbench-"));
  try {
    if (values.only !== "postgres") {
      const path = join(work, "db.sqlite");
      const t = performance.now();
      await fillSqlite(path, n);
      console.error(`sqlite: ${n} records in ${Math.round((performance.now() - t) / 1000)} s`);
      console.log(JSON.stringify(await measure("sqlite", `sqlite:${path}`, n, connections, idleSeconds, work)));
    }
    if (values.postgres && values.only !== "sqlite") {
      const admin = postgres(values.postgres, { onnotice: () => {} });
      const name = `ncps_evictbench_${process.pid}`;
      await admin.unsafe(`CREATE DATABASE ${name}`);
      const url = values.postgres.replace(/\/[^/?]*(\?|$)/, `/${name}$1`);
      try {
        const t = performance.now();
        await fillPostgres(url, n);
        console.error(`postgres: ${n} records in ${Math.round((performance.now() - t) / 1000)} s`);
        console.log(JSON.stringify(await measure("postgres", url, n, connections, idleSeconds, work)));
      } finally {
        await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await admin.end();
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
