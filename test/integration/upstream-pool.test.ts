/** The upstream pool against real HTTP upstreams serving real signed narinfos. */
import { afterEach, describe, expect, test } from "bun:test";
import { parseDrvOutputId, realisationPath } from "../../src/nix/realisation.ts";
import { parsePublicKey } from "../../src/nix/signature.ts";
import { silentLogger } from "../../src/telemetry/logger.ts";
import { CACHE_NIXOS_ORG_KEY, readFixture } from "../helpers/fixtures.ts";
import { UpstreamPool } from "../../src/upstream/pool.ts";
import { Upstream } from "../../src/upstream/upstream.ts";

const fixture = readFixture;
const NIXOS_KEY = parsePublicKey(CACHE_NIXOS_ORG_KEY);

const HELLO = "n5glp21rsz314qssw9fbvfswgy3kc68f";
const OTHER = "3acqrvb06vw0w3s9fa3wci433snbi2bg";
const ABSENT = "00000000000000000000000000000000";

type Behaviour = "normal" | "hang" | "500" | "tampered";

interface TestUpstream {
  url: string;
  hits: Map<string, number>;
  behaviour: Behaviour;
  /** requests held by "hang" and not answered yet */
  readonly hanging: number;
  stop(): void;
}

/** Upstreams started by the running test, stopped after it. */
const started: TestUpstream[] = [];
afterEach(() => {
  for (const u of started.splice(0)) u.stop();
});

function startTestUpstream(narinfos: Record<string, string>, priority: number): TestUpstream {
  const hits = new Map<string, number>();
  const hung: (() => void)[] = [];
  const state: TestUpstream = {
    url: "",
    hits,
    behaviour: "normal",
    get hanging() {
      return hung.length;
    },
    stop: () => {},
  };
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: async (req) => {
      const path = new URL(req.url).pathname.slice(1);
      hits.set(path, (hits.get(path) ?? 0) + 1);
      if (path === "nix-cache-info") return new Response(`StoreDir: /nix/store\nWantMassQuery: 1\nPriority: ${priority}\n`);
      if (state.behaviour === "hang") return new Promise<Response>((resolve) => hung.push(() => resolve(new Response("late", { status: 503 }))));
      if (state.behaviour === "500") return new Response("boom", { status: 500 });
      const hash = path.replace(/\.narinfo$/, "");
      const text = narinfos[hash];
      if (!text) return new Response("not found", { status: 404 });
      return new Response(state.behaviour === "tampered" ? text.replace(/NarSize: (\d+)/, (_, n) => `NarSize: ${Number(n) + 1}`) : text);
    },
  });
  state.url = `http://127.0.0.1:${server.port}`;
  state.stop = () => {
    for (const h of hung.splice(0)) h();
    server.stop(true);
  };
  started.push(state);
  return state;
}

function makePool(upstreams: TestUpstream[], opts: { headerTimeoutMs?: number; negativeTtlMs?: number; negativeCacheMax?: number } = {}) {
  const list = upstreams.map((u, i) => new Upstream(u.url, i, { headerTimeoutMs: opts.headerTimeoutMs ?? 8000, logger: silentLogger }));
  return new UpstreamPool(list, { trustedKeys: [NIXOS_KEY], negativeTtlMs: opts.negativeTtlMs ?? 0, negativeCacheMax: opts.negativeCacheMax, hedgeDelayMs: 100, logger: silentLogger });
}

/** This test's two upstreams, configured in the "wrong" order: nix-cache-info priorities
 * must decide. */
function twoUpstreams() {
  const fallback = startTestUpstream({ [HELLO]: fixture(HELLO), [OTHER]: fixture(OTHER) }, 40);
  const preferred = startTestUpstream({ [HELLO]: fixture(HELLO) }, 30);
  return { preferred, fallback };
}

describe("UpstreamPool", () => {
  test("asks the upstream with the best nix-cache-info priority first", async () => {
    const { preferred, fallback } = twoUpstreams();
    const pool = makePool([fallback, preferred]);
    await pool.checkHealth();
    const found = await pool.lookupNarInfo(HELLO);
    expect(found?.upstream.url).toBe(preferred.url);
    expect(found?.narinfo.storePath).toBe(`/nix/store/${HELLO}-hello-2.12.1`);
  });

  test("a path only the lower-priority upstream has comes from it", async () => {
    const { preferred, fallback } = twoUpstreams();
    const pool = makePool([fallback, preferred]);
    await pool.checkHealth();
    const found = await pool.lookupNarInfo(OTHER);
    expect(found?.upstream.url).toBe(fallback.url);
  });

  // The test's own timeout (10 s) is half the header timeout; the answer must come while the
  // hanging request is still unanswered.
  test("a hanging upstream does not hold the answer for its whole timeout", async () => {
    const { preferred, fallback } = twoUpstreams();
    preferred.behaviour = "hang";
    const pool = makePool([preferred, fallback], { headerTimeoutMs: 20_000 });
    const found = await pool.lookupNarInfo(HELLO);
    expect(found?.upstream.url).toBe(fallback.url);
    expect(preferred.hanging).toBe(1);
  }, 10_000);

  test("a narinfo whose signature does not verify counts as absent there", async () => {
    const { preferred, fallback } = twoUpstreams();
    preferred.behaviour = "tampered";
    const pool = makePool([preferred, fallback]);
    const found = await pool.lookupNarInfo(HELLO);
    expect(found?.upstream.url).toBe(fallback.url);
    preferred.behaviour = "normal";
    fallback.behaviour = "tampered";
    expect(await makePool([fallback]).lookupNarInfo(HELLO)).toBeNull();
  });

  test("500 from every upstream is a miss, not an exception", async () => {
    const { preferred, fallback } = twoUpstreams();
    preferred.behaviour = "500";
    fallback.behaviour = "500";
    expect(await makePool([preferred, fallback]).lookupNarInfo(HELLO)).toBeNull();
  });

  test("misses are remembered for the negative TTL", async () => {
    const { fallback } = twoUpstreams();
    const pool = makePool([fallback], { negativeTtlMs: 60_000 });
    expect(await pool.lookupNarInfo(ABSENT)).toBeNull();
    expect(await pool.lookupNarInfo(ABSENT)).toBeNull();
    expect(fallback.hits.get(`${ABSENT}.narinfo`)).toBe(1);
  });

  test("realisation misses are remembered in a list of their own: however many, they never push a narinfo miss out", async () => {
    const { fallback } = twoUpstreams();
    const pool = makePool([fallback], { negativeTtlMs: 60_000, negativeCacheMax: 2 });
    expect(await pool.lookupNarInfo(ABSENT)).toBeNull();
    const ids = ["1", "2", "3"].map((n) => parseDrvOutputId(`sha256:${n.repeat(64)}!out`));
    for (const id of ids) expect(await pool.lookupRealisation(id)).toBeNull();
    expect(await pool.lookupRealisation(ids[2]!)).toBeNull();
    expect(fallback.hits.get(realisationPath(ids[2]!))).toBe(1); // remembered too
    expect(await pool.lookupNarInfo(ABSENT)).toBeNull();
    expect(fallback.hits.get(`${ABSENT}.narinfo`)).toBe(1);
  });

  test("concurrent lookups of one hash share one upstream request", async () => {
    const { fallback } = twoUpstreams();
    const pool = makePool([fallback]);
    const results = await Promise.all(Array.from({ length: 10 }, () => pool.lookupNarInfo(OTHER)));
    expect(results.every((r) => r?.upstream.url === fallback.url)).toBe(true);
    expect(fallback.hits.get(`${OTHER}.narinfo`)).toBe(1);
  });

  test("an unreachable upstream answers misses fast after being marked down", async () => {
    const dead = { url: "http://127.0.0.1:9", hits: new Map(), behaviour: "normal" as Behaviour, hanging: 0, stop() {} };
    const pool = makePool([dead]);
    for (let i = 0; i < 4; i++) expect(await pool.lookupNarInfo(HELLO)).toBeNull();
    expect(pool.upstreams[0]!.available).toBe(false);
  });
});
