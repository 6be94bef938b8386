#!/usr/bin/env bun
/** `ncps fsck` over N stored NARs (default 100,000): time and peak RSS of the CLI process.
 *
 *   bun bench/fsck.ts [--nars 100000] [--blob-bytes 256]
 *
 * Fills a data directory directly (the schema through the MetadataStore, the rows by SQL; small
 * random blobs on local storage, each NAR named by one narinfo from the default upstream),
 * then runs `ncps fsck` twice: the structural checks, and with --verify-content (every blob
 * re-hashed). Peak RSS is the child's ru_maxrss. Not a test: nothing here is asserted. */
import { Database } from "bun:sqlite";
import { writeFileSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { defaultUpstreamUrl } from "../src/config/options.ts";
import { openMetadataStore } from "../src/db/open.ts";
import { encodeNix32 } from "../src/nix/nix32.ts";
import { ncpsCommand } from "../test/helpers/ncps.ts";

const { values } = parseArgs({
  options: { nars: { type: "string", default: "100000" }, "blob-bytes": { type: "string", default: "256" }, fill: { type: "string" } },
});
const count = Number(values.nars);
const blobBytes = Number(values["blob-bytes"]);

if (values.fill) {
  await fill(values.fill);
  process.exit(0);
}

const work = await mkdtemp(join(tmpdir(), "ncps-bench-fsck-"));
try {
  // Filled by a child: a child's ru_maxrss starts from its parent's RSS at fork, so this
  // process stays small for the fsck runs it measures.
  const fillStart = performance.now();
  const filler = Bun.spawn(["bun", import.meta.path, "--nars", String(count), "--blob-bytes", String(blobBytes), "--fill", work], { stdout: "inherit", stderr: "inherit" });
  if ((await filler.exited) !== 0) throw new Error("filling failed");
  console.log(`filled ${count} NARs of ${blobBytes} bytes in ${((performance.now() - fillStart) / 1000).toFixed(1)} s`);

  for (const flags of [[], ["--verify-content"]]) {
    const start = performance.now();
    const proc = Bun.spawn([...ncpsCommand(), "fsck", "--cache-storage-local", work, "--cache-temp-path", join(work, "tmp"), ...flags], {
      stdout: "pipe",
      stderr: "ignore",
    });
    const out = await new Response(proc.stdout).text();
    const status = await proc.exited;
    const seconds = (performance.now() - start) / 1000;
    const peakMb = (proc.resourceUsage()?.maxRSS ?? 0) / 2 ** 20; // Bun reports bytes
    const result = status === 0 ? "no problems" : `exit ${status}:\n${out}`;
    console.log(`ncps fsck ${flags.join(" ") || "(structural)"}: ${seconds.toFixed(1)} s, peak RSS ${peakMb.toFixed(0)} MB, ${result}`);
  }
} finally {
  await rm(work, { recursive: true, force: true });
}

async function fill(work: string): Promise<void> {
  await mkdir(join(work, "nar"), { recursive: true });
  // The schema through the MetadataStore; the rows in one transaction (100,000 writes
  // through putNar/putNarInfo, one transaction each, took about 90 s).
  await (await openMetadataStore(`sqlite:${join(work, "db", "db.sqlite")}`, { migrate: true })).close();
  const sql = new Database(join(work, "db", "db.sqlite"));
  const nar = sql.prepare("INSERT INTO nars (key, size, file_hash, nar_hash, created_at, last_accessed_at) VALUES (?, ?, ?, ?, ?, ?)");
  const narinfo = sql.prepare(
    `INSERT INTO narinfos (hash, store_path, text, nar_key, upstream, upstream_nar_url, compression, file_hash, file_size, nar_hash, nar_size, created_at, last_accessed_at)
     VALUES (?, ?, ?, ?, ?, ?, 'none', ?, ?, ?, ?, ?, ?)`,
  );
  const rows: [string, string, string][] = [];
  for (let i = 0; i < count; i++) {
    const blob = crypto.getRandomValues(new Uint8Array(blobBytes));
    const digest = `sha256:${encodeNix32(new Bun.CryptoHasher("sha256").update(blob).digest())}`;
    const key = `nar/${digest.slice(7)}.nar`;
    writeFileSync(join(work, key), blob);
    rows.push([key, digest, encodeNix32(crypto.getRandomValues(new Uint8Array(20)))]);
  }
  const now = Date.now();
  sql.transaction(() => {
    for (const [i, [key, digest, hash]] of rows.entries()) {
      nar.run(key, blobBytes, digest, digest, now, now);
      const storePath = `/nix/store/${hash}-bench-${i}`;
      narinfo.run(hash, storePath, `StorePath: ${storePath}\nURL: ${key}\n`, key, defaultUpstreamUrl, `${defaultUpstreamUrl}/${key}`, digest, blobBytes, digest, blobBytes, now, now);
    }
    sql.prepare("UPDATE stats SET value = ? WHERE name = 'stored_bytes'").run(count * blobBytes);
  })();
  sql.close();
}
