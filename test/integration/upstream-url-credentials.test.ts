/** An upstream URL carrying a user and password (`https://alice:s3cret@cache.example.org`):
 * ncps sends them to that upstream as HTTP Basic, as fetch would, and shows them nowhere:
 * not in a log line, an error, the status page, a metric or the database. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNcps } from "../../src/compose.ts";
import { createLogger } from "../../src/telemetry/logger.ts";
import { CACHE_NIXOS_ORG_KEY, readFixture } from "../helpers/fixtures.ts";
import { startInProcess } from "../helpers/ncps.ts";

const HASH = "n5glp21rsz314qssw9fbvfswgy3kc68f";
/** A narinfo the upstream fails with 503 every time. */
const FAILING = "0".repeat(32);
const PASSWORD = "s3cret-pw";
const GOOD_AUTH = `Basic ${btoa(`alice:${PASSWORD}`)}`;

/** Every file under `dir`, as text (the SQLite database and its WAL included). */
async function everyFile(dir: string): Promise<string> {
  const names = await readdir(dir, { recursive: true, withFileTypes: true });
  const texts = await Promise.all(names.filter((e) => e.isFile()).map((e) => readFile(join(e.parentPath, e.name), "latin1")));
  return texts.join("\n");
}

describe("credentials in the upstream URL", () => {
  let work: string;
  let upstream: ReturnType<typeof Bun.serve>;
  let ncps: RunningNcps | undefined;
  const auths: string[] = [];
  const logs: string[] = [];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "ncps-upstream-url-credentials-"));
    const narInfo = readFixture(HASH);
    upstream = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req) {
        const path = new URL(req.url).pathname;
        const auth = req.headers.get("authorization") ?? "";
        auths.push(auth);
        if (auth !== GOOD_AUTH) return new Response("unauthorized\n", { status: 401 });
        if (path === "/nix-cache-info") return new Response("StoreDir: /nix/store\nPriority: 40\n");
        if (path === `/${HASH}.narinfo`) return new Response(narInfo);
        if (path.startsWith("/nar/")) return new Response("broken\n", { status: 500 });
        return new Response("unavailable\n", { status: 503 });
      },
    });
    const url = `http://alice:${PASSWORD}@127.0.0.1:${upstream.port}`;
    ncps = await startInProcess(
      join(work, "data"),
      {
        "cache-upstream-url": [url],
        "cache-upstream-public-key": [CACHE_NIXOS_ORG_KEY],
        "cache-upstream-accept-unsigned": [url],
        "prometheus-enabled": true,
      },
      createLogger("debug", {}, (line) => logs.push(line)),
    );
  });

  afterAll(async () => {
    await ncps?.stop();
    await upstream?.stop(true);
    await rm(work, { recursive: true, force: true });
  });

  test("they reach the upstream, and no log line, error, status page, metric or stored row shows them", async () => {
    const base = ncps!.url;
    expect((await fetch(`${base}/${HASH}.narinfo`)).status).toBe(200);
    const nar = parseNarUrl(await (await fetch(`${base}/${HASH}.narinfo`)).text());
    // the upstream's 500 before any byte: a NAR it will not give is absent here (Nix moves on)
    expect((await fetch(`${base}/${nar}`)).status).toBe(404);
    // failures enough to mark the upstream down; a lookup that failed everywhere is a miss
    for (let i = 0; i < 4; i++) expect((await fetch(`${base}/${FAILING}.narinfo`)).status).toBe(404);
    expect(auths.length).toBeGreaterThan(0);
    expect(auths.every((a) => a === GOOD_AUTH)).toBe(true);

    const statusPage = await (await fetch(`${base}/`, { headers: { accept: "text/html" } })).text();
    expect(statusPage).toContain("Recent errors");
    expect(statusPage).toContain(`127.0.0.1:${upstream.port}`);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    await ncps!.stop();
    ncps = undefined;

    expect(logs.some((l) => l.includes("upstream marked down"))).toBe(true);
    const shows = (text: string) => text.includes(PASSWORD);
    const where = { logs: logs.filter(shows), statusPage: shows(statusPage), metrics: shows(metrics), files: shows(await everyFile(work)) };
    expect(where).toEqual({ logs: [], statusPage: false, metrics: false, files: false });
  });
});

function parseNarUrl(narInfo: string): string {
  return /^URL: (.*)$/m.exec(narInfo)![1]!;
}
