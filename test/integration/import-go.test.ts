/** `ncps import-go` as an operator runs it (the CLI in its own process), on Go ncps deployments
 * built from the Go ncps's own migration SQL of several versions (test/helpers/go-ncps.ts),
 * on SQLite and PostgreSQL: every good narinfo and NAR arrives and is served, signed with the
 * Go key; a NAR whose NarHash is wrong (which the Go ncps never checked), a lost NAR and a
 * CDC-chunked one are reported and skipped; a second run does nothing; a run killed midway
 * leaves a state that the next run completes and fsck finds clean; an ncps that already has
 * another key refuses unless told to keep it. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import { migrationsFor } from "../../src/db/migrations.ts";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { formatPublicKey, formatSecretKey, generateSecretKey, parsePublicKey, signNarInfo, toPublicKey, verifyNarInfo } from "../../src/nix/signature.ts";
import { createGoDeployment, type GoDeployment, type GoDialect, type GoVersion } from "../helpers/go-ncps.ts";
import { ncpsCommand, startInProcess } from "../helpers/ncps.ts";
import { testIf } from "../helpers/prereq.ts";
import { createTestDatabase, testServer, type TestDatabase } from "../helpers/server-databases.ts";
import { makeSyntheticCache, type SyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startStoppedPort } from "../helpers/upstream-server.ts";
import { s3rverAvailable, startS3rver } from "../helpers/s3rver.ts";
import { S3BlobStore } from "../../src/storage/s3.ts";
import { readdir } from "node:fs/promises";

const T = 120_000;
const goKey = generateSecretKey("go-ncps-1");
const goPublicKey = formatPublicKey(toPublicKey(goKey));
let work: string;
let syn: SyntheticCache;
let stoppedUpstream: string;
const postgres = await testServer("postgres");
const mysql = await testServer("mysql");
/** The server a Go dialect needs, or why it is missing. */
const serverFor = (dialect: GoDialect) => (dialect === "sqlite" ? { url: "", problem: null } : dialect === "postgres" ? postgres : mysql);
const databases: TestDatabase[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-import-go-"));
  syn = await makeSyntheticCache(join(work, "upstream"));
  stoppedUpstream = (await startStoppedPort()).url;
});

afterAll(async () => {
  for (const db of databases) await db.drop().catch(() => {});
  if (work) await rm(work, { recursive: true, force: true });
}, T);

async function goDeployment(name: string, version: GoVersion, dialect: GoDialect): Promise<GoDeployment> {
  let databaseUrl = `sqlite:${join(work, name, "go", "db", "db.sqlite")}`;
  if (dialect !== "sqlite") {
    const db = await createTestDatabase(serverFor(dialect).url!);
    databases.push(db);
    databaseUrl = db.url;
  }
  return createGoDeployment({ version, dialect, databaseUrl, storageDir: join(work, name, "go", "data"), secretKey: goKey });
}

/** A synthetic path as the Go ncps keeps it: the upstream's narinfo, signed by the Go ncps too. */
async function goPath(go: GoDeployment, name: string, opts: Parameters<SyntheticCache["add"]>[1] = {}, addOpts: Parameters<GoDeployment["add"]>[2] = {}): Promise<SyntheticPath> {
  const path = await syn.add(name, opts);
  await go.add(signNarInfo(path.narinfo, goKey), path.file, addOpts);
  return path;
}

/** A Go deployment (SQLite) holding one zstd path, closed, ready to be imported. */
async function goDeploymentWithOnePath(name: string, version: GoVersion, pathName: string): Promise<{ go: GoDeployment; path: SyntheticPath }> {
  const go = await goDeployment(name, version, "sqlite");
  try {
    return { go, path: await goPath(go, pathName, { compression: "zstd" }) };
  } finally {
    await go.close();
  }
}

/** This ncps's side: a data directory (storage, SQLite database, temp files). */
function ours(name: string): { dataDir: string; args: string[] } {
  const dataDir = join(work, name, "ncps");
  return {
    dataDir,
    args: ["--cache-storage-local", dataDir, "--cache-temp-path", join(dataDir, "tmp"), "--cache-upstream-url", stoppedUpstream, "--cache-hostname", "ncps-test"],
  };
}

interface Run {
  status: number;
  stdout: string;
  stderr: string;
  /** a summary figure ("imported 3 (...)" -> 3) */
  figure(label: string): number;
}

function cli(...args: string[]): ReturnType<typeof Bun.spawn> {
  return cliWithEnv({}, ...args);
}

function cliWithEnv(env: Record<string, string>, ...args: string[]): ReturnType<typeof Bun.spawn> {
  return Bun.spawn([...ncpsCommand(), ...args], {
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", ...env },
  });
}

async function finished(proc: ReturnType<typeof Bun.spawn>): Promise<Run> {
  const [stdout, stderr, status] = await Promise.all([
    new Response(proc.stdout as ReadableStream).text(),
    new Response(proc.stderr as ReadableStream).text(),
    proc.exited,
  ]);
  return {
    status,
    stdout,
    stderr,
    figure(label) {
      const m = new RegExp(`^${label}\\s+(\\d+)`, "m").exec(stdout);
      if (!m) throw new Error(`no "${label}" in:\n${stdout}\n${stderr}`);
      return Number(m[1]);
    },
  };
}

const importGo = (go: GoDeployment, side: { args: string[] }, ...extra: string[]) => finished(cli("import-go", ...go.flags(), ...side.args, ...extra));

async function withNcps<T>(side: { dataDir: string }, fn: (ncps: RunningNcps) => Promise<T>): Promise<T> {
  const ncps = await startInProcess(side.dataDir, { "cache-upstream-url": [stoppedUpstream] });
  try {
    return await fn(ncps);
  } finally {
    await ncps.stop();
  }
}

/** The path is served whole by ncps, its narinfo signed with the Go key. */
async function expectServed(ncps: RunningNcps, path: SyntheticPath) {
  const res = await fetch(`${ncps.url}/${path.hash}.narinfo`);
  expect(res.status).toBe(200);
  const narinfo = parseNarInfo(await res.text());
  expect(narinfo.storePath).toBe(path.storePath);
  expect(verifyNarInfo(narinfo, [parsePublicKey(goPublicKey)])).toBe(true);
  const nar = await fetch(`${ncps.url}/${narinfo.url}`);
  expect(nar.status).toBe(200);
  const expected = narinfo.compression === "none" ? path.nar : path.file;
  expect(Buffer.from(await nar.arrayBuffer()).equals(Buffer.from(expected))).toBe(true);
}

const combinations: { version: GoVersion; dialect: GoDialect }[] = [
  { version: "v0.5.0", dialect: "sqlite" },
  { version: "v0.7.0", dialect: "sqlite" },
  { version: "v0.7.0", dialect: "postgres" },
  { version: "v0.9.4", dialect: "sqlite" },
  { version: "v0.9.4", dialect: "postgres" },
  { version: "816f6378", dialect: "sqlite" },
  { version: "816f6378", dialect: "postgres" },
  { version: "v0.7.0", dialect: "mysql" },
  { version: "816f6378", dialect: "mysql" },
];

describe("import-go: a Go ncps deployment of each schema", () => {
  for (const { version, dialect } of combinations) {
    const name = `go-${version}-${dialect}`;
    const server = serverFor(dialect);
    testIf(server.url !== null, `${name}: ${server.problem}`)(
      `Go ${version} on ${dialect}: good paths imported and served with the Go key, bad ones skipped, a re-run does nothing`,
      async () => {
        const go = await goDeployment(name, version, dialect);
        const fieldsInDb = version === "v0.9.4" || version === "816f6378";
        let good: SyntheticPath[];
        try {
          const base = await goPath(go, "base", { compression: "zstd", size: 8192 });
          good = [
            base,
            await goPath(go, "plain", { compression: "none", size: 5000 }),
            await goPath(go, "user", { compression: "zstd", references: [base.storePath.slice("/nix/store/".length)] }),
          ];
          // a v0.8+ row whose text `migrate-narinfo` has not moved into the database yet
          if (fieldsInDb) good.push(await goPath(go, "not-yet-migrated", { compression: "zstd" }, { textInStorage: true }));
          // FileHash right, NarHash wrong: the Go ncps never checked it
          await goPath(go, "corrupt", { compression: "zstd", fileBytes: Bun.zstdCompressSync(crypto.getRandomValues(new Uint8Array(4096))) });
          await goPath(go, "lost", { compression: "zstd" }, { omitNar: true });
          if (fieldsInDb) {
            // CDC: only the chunks are held (the whole NAR comes back from them); or not all
            const chunked = await syn.add("chunked", { compression: "zstd", size: 50_000 });
            await go.add(signNarInfo(chunked.narinfo, goKey), chunked.file, { chunked: chunked.nar });
            good.push(chunked);
            const broken = await syn.add("chunks-lost", { compression: "zstd" });
            await go.add(signNarInfo(broken.narinfo, goKey), broken.file, { chunked: broken.nar, chunksLost: true });
          }
          if (version === "816f6378") {
            await go.pin(good[2]!.hash);
            await go.pin((await goPath(go, "pinned-corrupt", { compression: "zstd", fileBytes: Bun.zstdCompressSync(new Uint8Array(64)) })).hash);
          }
        } finally {
          await go.close();
        }
        const side = ours(name);

        const first = await importGo(go, side);
        expect(first.stderr).not.toContain("    at "); // no stack trace
        expect(first.status).toBe(0);
        expect(first.figure("imported")).toBe(good.length);
        const skipped = (fieldsInDb ? 3 : 2) + (version === "816f6378" ? 1 : 0);
        expect(first.figure("not imported")).toBe(skipped);
        expect(first.figure("pins")).toBe(version === "816f6378" ? 1 : 0);
        if (version === "816f6378") expect(first.stdout).toContain("(1 not imported: their narinfo was not)");
        expect(first.stdout).toContain("-corrupt: NAR does not match the narinfo");
        expect(first.stdout).toMatch(/-lost: its NAR is not in the Go storage \(store\/nar\//);
        if (fieldsInDb) expect(first.stdout).toContain("-chunks-lost: the Go ncps holds its NAR as CDC chunks, but not all of them are recorded");
        expect(first.stdout).toContain(`signing key              ${goPublicKey}`);

        await withNcps(side, async (ncps) => {
          expect(ncps.publicKey).toBe(goPublicKey);
          for (const path of good) await expectServed(ncps, path);
        });

        const second = await importGo(go, side);
        expect(second.status).toBe(0);
        expect(second.figure("imported")).toBe(0);
        expect(second.figure("already here")).toBe(good.length);
        expect(second.figure("not imported")).toBe(skipped);
        if (version === "816f6378") {
          const pins = await finished(cli("pin", "ls", ...side.args));
          expect(pins.stdout).toContain(good[2]!.storePath);
          expect(pins.stdout.trim().split("\n").filter((l) => l.includes("/nix/store/"))).toHaveLength(1);
        }
      },
      T,
    );
  }
});

test(
  "--no-cache-database-auto-migrate, as for serve: an out-of-date schema is refused with one line and left as it is; once `ncps migrate up` ran, the import runs",
  async () => {
    const { go, path } = await goDeploymentWithOnePath("no-auto-migrate", "816f6378", "one");
    const side = ours("no-auto-migrate");
    const refused = await importGo(go, side, "--no-cache-database-auto-migrate");
    expect(refused.status).toBe(1);
    const pending = migrationsFor("sqlite").map((m) => m.name).join(", ");
    expect(refused.stderr.trim().split("\n")).toHaveLength(1);
    expect(refused.stderr.trim()).toEndWith(`ncps: database schema is not up to date (pending: ${pending}): run \`ncps migrate up\``);
    const db = new Database(join(side.dataDir, "db", "db.sqlite"), { readonly: true });
    try {
      expect(db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all()).toEqual([]);
    } finally {
      db.close();
    }

    expect((await finished(cli("migrate", "up", ...side.args))).status).toBe(0);
    const run = await importGo(go, side, "--no-cache-database-auto-migrate");
    expect(run.status).toBe(0);
    expect(run.figure("imported")).toBe(1);
    // progress off a terminal: the plain lines every long CLI run prints (cli/progress.ts)
    expect(run.stderr).toMatch(/^import-go: importing narinfos: 1\/1$/m);
    await withNcps(side, (ncps) => expectServed(ncps, path));
  },
  T,
);

/** Waits until this ncps's SQLite database holds at least `least` narinfos (a run under way);
 * returns how many it holds then. */
async function narInfosRecorded(dataDir: string, least: number): Promise<number> {
  const dbPath = join(dataDir, "db", "db.sqlite");
  let recorded = 0;
  for (let waited = 0; waited < 60_000 && recorded < least; waited += 10) {
    if (await Bun.file(dbPath).exists()) {
      try {
        const db = new Database(dbPath, { readonly: true });
        recorded = (db.prepare("SELECT COUNT(*) AS n FROM narinfos").get() as { n: number }).n;
        db.close();
      } catch {}
    }
    if (recorded < least) await Bun.sleep(10);
  }
  return recorded;
}

async function manyPaths(name: string): Promise<{ go: GoDeployment; paths: SyntheticPath[] }> {
  const go = await goDeployment(name, "816f6378", "sqlite");
  const paths: SyntheticPath[] = [];
  try {
    for (let i = 0; i < 40; i++) paths.push(await goPath(go, `p${i}`, { compression: i % 2 ? "zstd" : "none", size: 256 * 1024 }));
  } finally {
    await go.close();
  }
  return { go, paths };
}

describe("import-go: interrupted and re-run", () => {
  test(
    "Ctrl-C (SIGINT): the narinfos under way finish, the run says how far it got and exits 1; the next run does the rest",
    async () => {
      const { go, paths } = await manyPaths("sigint");
      const side = ours("sigint");
      const proc = cli("import-go", ...go.flags(), ...side.args);
      expect(await narInfosRecorded(side.dataDir, 2)).toBeGreaterThanOrEqual(2);
      proc.kill("SIGINT");
      const stopped = await finished(proc);
      expect(stopped.status).toBe(1);
      expect(stopped.stderr).toMatch(/ncps: interrupted after \d+ of 40 narinfos: run the same command again to import the rest/);
      expect(stopped.stdout).toContain("interrupted: run the same command again");
      const done = stopped.figure("imported");
      expect(done).toBeLessThan(paths.length);

      const rerun = await importGo(go, side);
      expect(rerun.status).toBe(0);
      expect(rerun.figure("already here")).toBe(done);
      expect(rerun.figure("imported")).toBe(paths.length - done);
    },
    T,
  );

  test(
    "killed midway (SIGKILL), the next run completes the import and fsck finds nothing to repair",
    async () => {
      const { go, paths } = await manyPaths("killed");
      const side = ours("killed");
      const proc = cli("import-go", ...go.flags(), ...side.args);
      const recorded = await narInfosRecorded(side.dataDir, 3);
      proc.kill("SIGKILL");
      await proc.exited;
      expect(recorded).toBeGreaterThanOrEqual(3);
      expect(recorded).toBeLessThan(paths.length);

      const rerun = await importGo(go, side);
      expect(rerun.status).toBe(0);
      expect(rerun.figure("already here") + rerun.figure("imported")).toBe(paths.length);
      expect(rerun.figure("imported")).toBeGreaterThan(0);
      expect(rerun.figure("not imported")).toBe(0);

      const fsck = await finished(cli("fsck", ...side.args));
      expect(fsck.stdout).toContain("no problems found");
      expect(fsck.status).toBe(0);
      await withNcps(side, async (ncps) => {
        for (const path of paths) await expectServed(ncps, path);
      });
    },
    T,
  );

  testIf(postgres.url !== null, `Go on postgres: ${postgres.problem}`)(
    "a second Ctrl-C exits (130) without waiting for the narinfos under way, this ncps's database sessions closed rather than dropped",
    async () => {
      const goDatabase = await createTestDatabase(postgres.url!);
      const ourDatabase = await createTestDatabase(postgres.url!);
      databases.push(goDatabase, ourDatabase);
      const go = await createGoDeployment({ version: "816f6378", dialect: "postgres", databaseUrl: goDatabase.url, storageDir: join(work, "second-sigint", "go", "data"), secretKey: goKey });
      try {
        await goPath(go, "held", { compression: "zstd" });
      } finally {
        await go.close();
      }
      // the import's first read of the Go narinfos waits on this lock: the run is under way and
      // cannot finish before the second interrupt
      await goDatabase.query("BEGIN");
      await goDatabase.query("LOCK TABLE narinfos IN ACCESS EXCLUSIVE MODE");
      try {
        const side = ours("second-sigint");
        const proc = cli("import-go", ...go.flags(), ...side.args, "--cache-database-url", ourDatabase.url);
        const stderr = linesOf(proc.stderr as ReadableStream<Uint8Array>);
        await stderr.seen(/"msg":"signing with the Go ncps's key"/); // the interrupt handler is set just after
        proc.kill("SIGINT");
        await stderr.seen(/interrupted: finishing the narinfos under way/);
        proc.kill("SIGINT");
        expect(await proc.exited).toBe(130);
        expect(await stderr.all).not.toMatch(/^ncps: /m); // the closed pools' failures are not reported

        const others = "datname = $1 AND pid <> pg_backend_pid()";
        for (const until = Date.now() + 10_000; Date.now() < until; await Bun.sleep(20)) {
          if ((await ourDatabase.query(`SELECT pid FROM pg_stat_activity WHERE ${others}`, [ourDatabase.name])).length === 0) break;
        }
        const [stats] = await ourDatabase.query<{ sessions: number; sessions_abandoned: number }>(
          "SELECT sessions::int, sessions_abandoned::int FROM pg_stat_database WHERE datname = $1",
          [ourDatabase.name],
        );
        expect(stats!.sessions).toBeGreaterThan(1); // the import's, and this test's own
        expect(stats!.sessions_abandoned).toBe(0);
      } finally {
        await goDatabase.query("ROLLBACK");
      }
    },
    T,
  );
});

/** A process's stderr as it arrives: `seen` resolves once a line matching the pattern came (or
 * rejects when the stream ends without one); `all` is the whole text once it ends. */
function linesOf(stream: ReadableStream<Uint8Array>) {
  let text = "";
  let ended = false;
  const waiters: (() => void)[] = [];
  const all = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      text += decoder.decode(chunk, { stream: true });
      for (const wake of waiters.splice(0)) wake();
    }
    ended = true;
    for (const wake of waiters.splice(0)) wake();
    return text;
  })();
  async function seen(pattern: RegExp): Promise<void> {
    while (!pattern.test(text)) {
      if (ended) throw new Error(`stderr ended without ${pattern}:\n${text}`);
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
  }
  return { seen, all };
}

describe("import-go: CDC chunks", () => {
  test(
    "a chunk that is not zstd: that narinfo is reported and skipped, the run goes on",
    async () => {
      const go = await goDeployment("bad-chunk", "v0.9.4", "sqlite");
      let fine: SyntheticPath;
      try {
        const chunked = await syn.add("bad-chunk", { compression: "zstd" });
        await go.add(signNarInfo(chunked.narinfo, goKey), chunked.file, { chunked: chunked.nar });
        const chunkDir = join(go.storageDir, "store", "chunk");
        for (const f of (await readdir(chunkDir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile())) {
          await Bun.write(join(f.parentPath, f.name), "not zstd at all");
        }
        fine = await goPath(go, "fine", { compression: "zstd" });
      } finally {
        await go.close();
      }
      const side = ours("bad-chunk");
      const run = await importGo(go, side);
      expect(run.status).toBe(0);
      expect(run.figure("imported")).toBe(1);
      expect(run.stdout).toMatch(/-bad-chunk: its CDC chunk [0-9a-f]{64} in the Go storage is not zstd/);
      await withNcps(side, (ncps) => expectServed(ncps, fine));
    },
    T,
  );
});

describe("import-go: the signing key", () => {
  test(
    "an ncps that already has another key refuses and changes nothing; --keep-signing-key imports, signed with its own key",
    async () => {
      const { go, path } = await goDeploymentWithOnePath("other-key", "v0.9.4", "only");
      const side = ours("other-key");
      // this ncps has run before: it generated a key of its own
      const ownKey = await withNcps(side, async (ncps) => ncps.publicKey);
      expect(ownKey).not.toBe(goPublicKey);

      const refused = await importGo(go, side);
      expect(refused.status).toBe(1);
      expect(refused.stderr).toContain(`this ncps already signs with a key of its own (in its database) (${ownKey}), not the Go ncps's (${goPublicKey}): nothing was imported`);
      await withNcps(side, async (ncps) => {
        expect(ncps.publicKey).toBe(ownKey);
        expect((await fetch(`${ncps.url}/${path.hash}.narinfo`)).status).toBe(404);
      });

      const kept = await importGo(go, side, "--keep-signing-key");
      expect(kept.status).toBe(0);
      expect(kept.figure("imported")).toBe(1);
      await withNcps(side, async (ncps) => {
        const narinfo = parseNarInfo(await (await fetch(`${ncps.url}/${path.hash}.narinfo`)).text());
        expect(verifyNarInfo(narinfo, [parsePublicKey(ownKey)])).toBe(true);
      });
    },
    T,
  );

  test(
    "the Go key from --from-cache-secret-key-path; a wrong database is refused in one line",
    async () => {
      const go = await goDeployment("key-file", "v0.7.0", "sqlite");
      let path: SyntheticPath;
      const fileKey = generateSecretKey("go-file-1");
      try {
        path = await syn.add("from-file", { compression: "zstd" });
        await go.add(path.narinfo, path.file);
      } finally {
        await go.close();
      }
      const keyFile = join(work, "key-file", "go.key");
      await Bun.write(keyFile, formatSecretKey(fileKey));
      const side = ours("key-file");
      const run = await importGo(go, side, "--from-cache-secret-key-path", keyFile);
      expect(run.status).toBe(0);
      expect(run.figure("imported")).toBe(1);
      await withNcps(side, async (ncps) => {
        expect(ncps.publicKey).toBe(formatPublicKey(toPublicKey(fileKey)));
      });

      // this ncps's own database given as the Go one
      const wrong = await finished(
        cli("import-go", "--from-cache-database-url", `sqlite:${join(side.dataDir, "db", "db.sqlite")}`, "--from-cache-storage-local", side.dataDir, ...ours("wrong").args),
      );
      expect(wrong.status).toBe(1);
      expect(wrong.stderr.trim().split("\n")).toHaveLength(1);
      expect(wrong.stderr).toContain("is a database of this ncps, not of the Go ncps");
    },
    T,
  );
});

describe("a Go ncps database given to ncps as its own", () => {
  for (const { version, dialect } of [
    { version: "v0.5.0", dialect: "sqlite" },
    { version: "816f6378", dialect: "sqlite" },
    { version: "v0.9.4", dialect: "postgres" },
    { version: "816f6378", dialect: "mysql" },
  ] as const) {
    const server = serverFor(dialect);
    testIf(server.url !== null, `${dialect}: ${server.problem}`)(
      `Go ${version} on ${dialect}: migrate up and serve refuse in one line, naming import-go, and leave it as it was`,
      async () => {
        const go = await goDeployment(`as-own-${version}-${dialect}`, version, dialect);
        await goPath(go, "kept", { compression: "zstd" });
        await go.close();
        const side = ours(`as-own-${version}-${dialect}`);
        for (const command of [["migrate", "up"], ["serve", "--server-addr", "127.0.0.1:0"]]) {
          const run = await finished(cli(...command, ...side.args, "--cache-database-url", go.databaseUrl));
          expect(run.status).toBe(1);
          expect(run.stderr.trim().split("\n")).toHaveLength(1);
          expect(run.stderr).toContain("is a Go ncps database, which ncps does not use as it is");
          expect(run.stderr).toContain("ncps import-go --from-cache-database-url");
        }
        // still a Go database the import reads whole
        const imported = await importGo(go, side);
        expect(imported.status).toBe(0);
        expect(imported.figure("imported")).toBe(1);
      },
      T,
    );
  }
});

describe("import-go: a Go ncps on S3", () => {
  testIf(s3rverAvailable, "s3rver (node and node_modules/s3rver) is needed")(
    "Go v0.5.0 with its narinfo texts and key in an S3 bucket (an endpoint without a scheme, use-ssl off, as the Go flags give it; credentials from the AWS environment)",
    async () => {
      const s3 = await startS3rver({ bucket: "go-ncps" });
      try {
        const go = await goDeployment("s3", "v0.5.0", "sqlite");
        const good: SyntheticPath[] = [];
        try {
          good.push(await goPath(go, "s3-a", { compression: "zstd", size: 20_000 }));
          good.push(await goPath(go, "s3-b", { compression: "none" }));
          await goPath(go, "s3-corrupt", { compression: "zstd", fileBytes: Bun.zstdCompressSync(crypto.getRandomValues(new Uint8Array(1000))) });
        } finally {
          await go.close();
        }
        // the Go storage, object for object, in the bucket instead of the directory
        const bucket = new S3BlobStore({ bucket: s3.bucket, endpoint: s3.endpoint, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, forcePathStyle: true });
        const files = (await readdir(go.storageDir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile());
        for (const f of files) await bucket.putFile(join(f.parentPath, f.name).slice(go.storageDir.length + 1), join(f.parentPath, f.name));
        const side = ours("s3");
        // no keys given: the AWS chain's, here its environment variables (the keys flags are
        // the other way, as for serve)
        const run = await finished(
          cliWithEnv(
            { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey },
            "import-go",
            "--from-cache-database-url", go.databaseUrl,
            "--from-cache-storage-s3-bucket", s3.bucket,
            "--from-cache-storage-s3-endpoint", s3.endpoint.replace("http://", ""),
            "--from-cache-storage-s3-use-ssl=false",
            "--from-cache-storage-s3-force-path-style",
            ...side.args,
          ),
        );
        expect(run.status).toBe(0);
        expect(run.figure("imported")).toBe(2);
        expect(run.figure("not imported")).toBe(1);
        expect(run.stdout).toContain("-s3-corrupt: NAR does not match the narinfo");
        expect(run.stderr).toContain('"from":"its storage (config/cache.key)"');
        await withNcps(side, async (ncps) => {
          expect(ncps.publicKey).toBe(goPublicKey);
          for (const path of good) await expectServed(ncps, path);
        });
        // only read: nothing was written to or removed from the Go bucket
        await s3.settle();
        expect(s3.requests().filter((r) => r.url.startsWith(`/${s3.bucket}`) && r.method !== "GET" && r.method !== "HEAD").length).toBe(files.length);
      } finally {
        await s3.stop();
      }
    },
    T,
  );
});

test("import-go: half of an S3 key pair for the Go storage is refused before anything is read", async () => {
  const side = ours("s3-half-key");
  const run = await finished(
    cli("import-go", "--from-cache-database-url", "sqlite:/nonexistent/db.sqlite", "--from-cache-storage-s3-bucket", "b", "--from-cache-storage-s3-endpoint", "s3.example.org", "--from-cache-storage-s3-access-key-id", "AKIA", ...side.args),
  );
  expect(run.status).not.toBe(0);
  expect(run.stderr).toContain("the Go ncps's S3 storage needs --from-cache-storage-s3-secret-access-key too (or neither key, to take credentials from the AWS chain: environment, profile, role)");
});
