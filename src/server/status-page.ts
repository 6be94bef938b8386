/** GET / for a browser: one small page an operator can read at a glance (is the cache
 * helping, is an upstream failing, what is downloading). Self-contained: no script, no asset,
 * no build step; it refreshes itself every 10 s. It shows nothing a reader of / and /pubkey
 * could not already learn, and no secret: no token, database URL or path. Everything else that
 * asks for / gets the JSON summary. */
import type { RequestContext } from "./router.ts";

export interface StatusFigures {
  version: string;
  hostname: string;
  publicKey: string;
  narInfos: { hits: number; misses: number };
  nars: { hits: number; misses: number };
  /** response bytes of every route, and of NARs alone */
  bytesServed: number;
  narBytesServed: number;
  bytesFetched: number;
  storedBytes: number;
  /** null: no cap */
  maxSizeBytes: number | null;
  upstreams: { url: string; healthy: boolean; latencyMs: number | null; bytesFetched: number }[];
  downloads: { key: string; received: number; size: number | null; seconds: number }[];
  recentErrors: { at: string; what: string }[];
}

type Handler = (ctx: RequestContext) => Response | Promise<Response>;

export function statusOrSummary(status: (() => Promise<StatusFigures>) | undefined, summary: Handler): Handler {
  if (!status) return summary;
  return async (ctx) => {
    if (!(ctx.req.headers.get("accept") ?? "").includes("text/html")) return summary(ctx);
    const html = renderStatusPage(await status());
    return new Response(ctx.head ? null : html, {
      headers: {
        "content-type": "text/html; charset=utf-8",
        "content-length": String(Buffer.byteLength(html)),
        "cache-control": "no-store",
        // nothing loads from anywhere, and nothing may run
        "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
      },
    });
  };
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) (v /= 1024), i++;
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

function ratio(hits: number, misses: number): string {
  const total = hits + misses;
  return total === 0 ? "–" : `${((100 * hits) / total).toFixed(1)}%`;
}

export function renderStatusPage(f: StatusFigures): string {
  const fig = (name: string, value: string) => `<span data-figure="${name}">${escapeHtml(value)}</span>`;
  const saved = Math.max(0, f.narBytesServed - f.bytesFetched);
  const cap = f.maxSizeBytes ? `${formatBytes(f.maxSizeBytes)} (${((100 * f.storedBytes) / f.maxSizeBytes).toFixed(1)}% used)` : "no cap";
  const upstreams = f.upstreams
    .map(
      (u) =>
        `<tr data-upstream="${escapeHtml(u.url)}"><td>${escapeHtml(u.url)}</td><td class="${u.healthy ? "ok" : "bad"}">${u.healthy ? "up" : "down"}</td>` +
        `<td>${u.latencyMs === null ? "–" : `${u.latencyMs.toFixed(0)} ms`}</td><td>${formatBytes(u.bytesFetched)}</td></tr>`,
    )
    .join("");
  const downloads = f.downloads.length
    ? f.downloads
        .map((d) => {
          const pct = d.size ? Math.min(100, (100 * d.received) / d.size) : null;
          return `<tr><td><code>${escapeHtml(d.key)}</code></td><td>${formatBytes(d.received)}${d.size ? ` of ${formatBytes(d.size)}` : ""}</td>` +
            `<td>${pct === null ? "" : `<progress max="100" value="${pct.toFixed(0)}"></progress>`}</td><td>${d.seconds.toFixed(0)} s</td></tr>`;
        })
        .join("")
    : `<tr><td colspan="4">none</td></tr>`;
  const errors = f.recentErrors.length
    ? f.recentErrors.map((e) => `<li><time>${escapeHtml(e.at)}</time> ${escapeHtml(e.what)}</li>`).join("")
    : "<li>none</li>";
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ncps · ${escapeHtml(f.hostname)}</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin:1.6rem 0 .4rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(13rem,1fr));gap:.8rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.6rem .8rem}.card b{display:block;font-size:1.5rem}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eee}
.ok{color:#13795b}.bad{color:#b42318}code{font-size:.85em;word-break:break-all}.muted{color:#666}
</style></head><body>
<h1>ncps · ${escapeHtml(f.hostname)}</h1>
<div class="muted">version ${fig("version", f.version)} · public key <code>${fig("public-key", f.publicKey)}</code></div>
<h2>Is it helping?</h2>
<div class="grid">
<div class="card">narinfo hit ratio<b>${fig("narinfo-hit-ratio", ratio(f.narInfos.hits, f.narInfos.misses))}</b>${fig("narinfo-hits", String(f.narInfos.hits))} hits, ${fig("narinfo-misses", String(f.narInfos.misses))} misses</div>
<div class="card">NAR hit ratio<b>${fig("nar-hit-ratio", ratio(f.nars.hits, f.nars.misses))}</b>${fig("nar-hits", String(f.nars.hits))} hits, ${fig("nar-misses", String(f.nars.misses))} misses</div>
<div class="card">served to clients<b>${fig("bytes-served", formatBytes(f.bytesServed))}</b>fetched from upstreams: ${fig("bytes-fetched", formatBytes(f.bytesFetched))}</div>
<div class="card">bandwidth saved<b>${fig("bytes-saved", formatBytes(saved))}</b>NAR bytes served minus fetched</div>
<div class="card">stored<b>${fig("stored-bytes", formatBytes(f.storedBytes))}</b>cap: ${fig("max-size", cap)}</div>
<div class="card">downloads in flight<b>${fig("downloads-in-flight", String(f.downloads.length))}</b>from upstreams now</div>
</div>
<h2>Upstreams</h2>
<table><thead><tr><th>upstream</th><th>health</th><th>narinfo latency</th><th>fetched</th></tr></thead><tbody>${upstreams}</tbody></table>
<h2>Downloads in flight</h2>
<table><thead><tr><th>NAR</th><th>received</th><th>progress</th><th>running</th></tr></thead><tbody>${downloads}</tbody></table>
<h2>Recent errors</h2>
<ul data-figure="recent-errors">${errors}</ul>
</body></html>
`;
}
