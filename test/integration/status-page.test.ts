/** The status page in a real browser: Debian's headless Chromium, driven by playwright-core,
 * loads GET / (with the read token, which the page obeys like any read) after a miss and some
 * hits, and shows the figures that happened; a screenshot is kept in the test's directory. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser } from "playwright-core";
import type { RunningNcps } from "../../src/compose.ts";
import { version } from "../../src/version.ts";
import { startInProcess } from "../helpers/ncps.ts";
import { testIf } from "../helpers/prereq.ts";
import { makeSyntheticCache, type SyntheticPath } from "../helpers/synthetic-cache.ts";
import { startUpstream, type Upstream } from "../helpers/upstream-server.ts";

const CHROMIUM = "/usr/bin/chromium";
const browserTest = testIf(existsSync(CHROMIUM), "Debian's chromium is needed (apt-get install chromium)");
const TOKEN = "page-reader-token";

let work: string;
let upstream: Upstream;
let ncps: RunningNcps;
let path: SyntheticPath;
let browser: Browser | undefined;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ncps-status-page-"));
  const cache = await makeSyntheticCache(join(work, "up"));
  path = await cache.add("shown", { size: 300 * 1024 });
  upstream = await startUpstream(cache.dir);
  ncps = await startInProcess(join(work, "ncps"), {
    "cache-upstream-url": [upstream.url],
    "cache-upstream-public-key": [cache.publicKey],
    "cache-get-token": TOKEN,
  });
  const auth = { headers: { authorization: `Bearer ${TOKEN}` } };
  for (let i = 0; i < 3; i++) await (await fetch(`${ncps.url}/${path.hash}.narinfo`, auth)).text(); // 1 miss, 2 hits
  for (let i = 0; i < 2; i++) {
    await (await fetch(`${ncps.url}/${path.narinfo.url}`, auth)).arrayBuffer(); // 1 miss, then 1 hit
    await ncps.cache.drain(); // stored: the next one is a hit
  }
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await ncps?.stop();
  await upstream?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test("a browser without the read token gets 401, and JSON stays the answer for everything else", async () => {
  expect((await fetch(`${ncps.url}/`, { headers: { accept: "text/html" } })).status).toBe(401);
  const json = await fetch(`${ncps.url}/`, { headers: { authorization: `Bearer ${TOKEN}` } });
  expect(json.headers.get("content-type")).toContain("application/json");
  expect(((await json.json()) as { publicKey: string }).publicKey).toBe(ncps.publicKey);
});

browserTest("headless Chromium shows the hits, misses, bytes, upstream and key that happened", async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  const page = await browser.newPage({ extraHTTPHeaders: { authorization: `Bearer ${TOKEN}` } });
  const res = await page.goto(`${ncps.url}/`);
  expect(res?.status()).toBe(200);
  const figure = (name: string) => page.locator(`[data-figure="${name}"]`).innerText();
  expect(await figure("narinfo-hits")).toBe("2");
  expect(await figure("narinfo-misses")).toBe("1");
  expect(await figure("narinfo-hit-ratio")).toBe("66.7%");
  expect(await figure("nar-hits")).toBe("1");
  expect(await figure("nar-misses")).toBe("1");
  const size = path.file.length;
  const kib = `${(size / 1024).toFixed(1)} KiB`;
  expect(await figure("bytes-fetched")).toBe(kib);
  expect(await figure("stored-bytes")).toBe(kib);
  expect(await figure("bytes-saved")).toBe(kib); // served twice, fetched once
  expect(await figure("downloads-in-flight")).toBe("0");
  expect(await figure("max-size")).toBe("no cap");
  expect(await figure("public-key")).toBe(ncps.publicKey);
  expect(await figure("version")).toBe(version);
  const row = page.locator(`tr[data-upstream="${upstream.url}"]`);
  expect(await row.locator("td").nth(1).innerText()).toBe("up");
  expect(await row.locator("td").nth(2).innerText()).toMatch(/^\d+ ms$/);
  // nothing secret: not the token, not where the data lives
  const html = await page.content();
  expect(html).not.toContain(TOKEN);
  expect(html).not.toContain(work);
  const shot = join(work, "status-page.png");
  await page.screenshot({ path: shot, fullPage: true });
  expect((await stat(shot)).size).toBeGreaterThan(10_000);
}, 60_000);
