/** The proxy an upstream is reached through (`--cache-upstream-proxy UPSTREAM=PROXY`), and the
 * one request function that sends through it. HTTP and HTTPS proxies go through Bun's fetch
 * (its `proxy` option, a CONNECT tunnel for https targets); Bun's fetch has no SOCKS, so a
 * SOCKS5 proxy goes through node:http with socks-proxy-agent (the proxy-agents project that
 * npm itself uses). Either way the caller (Upstream) decides what may be fetched and when to
 * give up: this module only carries one request. */
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { Readable } from "node:stream";
import { SocksProxyAgent } from "socks-proxy-agent";
import { upstreamIdentity } from "./upstream-url.ts";

export class ProxyError extends Error {
  override name = "ProxyError";
}

const PROXY_SCHEMES = new Set(["http:", "https:", "socks5:", "socks5h:"]);

/** A proxy as configured: http, https, socks5 (names resolved here) or socks5h (by the
 * proxy), with a host and optionally a user and password, and nothing else. Messages never
 * repeat the password. */
export function parseProxyUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ProxyError("invalid proxy URL (expected scheme://[user:password@]host[:port])");
  }
  const shown = displayProxy(url);
  if (!PROXY_SCHEMES.has(url.protocol)) throw new ProxyError(`proxy ${shown}: use http, https, socks5 or socks5h`);
  if (url.hostname === "") throw new ProxyError(`proxy ${shown} has no host`);
  if ((url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.hash !== "") {
    throw new ProxyError(`proxy ${shown}: a proxy URL is scheme://[user:password@]host[:port], nothing after it`);
  }
  return url;
}

/** `UPSTREAM_URL=PROXY_URL`, split at the last "=" that a proxy scheme follows (an upstream
 * URL may hold "=" in its query, as in ?priority=10). The upstream is named as ncps names
 * upstreams (upstreamIdentity): its user and password need not be repeated here. */
export function parseUpstreamProxy(text: string): { upstream: string; proxy: URL } {
  const match = /^(.+)=((?:https?|socks5h?):\/\/[^=]*)$/i.exec(text);
  if (!match) throw new ProxyError("expected UPSTREAM_URL=PROXY_URL (proxy: http, https, socks5 or socks5h)");
  return { upstream: upstreamIdentity(match[1]!), proxy: parseProxyUrl(match[2]!) };
}

/** The proxy of each configured upstream URL that has one: its --cache-upstream-proxy, else
 * a SOCKS proxy from the environment (see environmentSocksProxy). */
export function upstreamProxies(upstreamUrls: string[], configured: string[], env: Record<string, string | undefined>): Map<string, URL> {
  const given = new Map<string, URL>();
  for (const text of configured) {
    const { upstream, proxy } = parseUpstreamProxy(text);
    given.set(upstream, proxy);
  }
  const proxies = new Map<string, URL>();
  for (const url of upstreamUrls) {
    const proxy = given.get(upstreamIdentity(url)) ?? environmentSocksProxy(url, env);
    if (proxy) proxies.set(url, proxy);
  }
  return proxies;
}

/** The SOCKS proxy the environment names for `upstream`, as Go's ProxyFromEnvironment reads
 * it (the Go ncps's only proxy setting): HTTPS_PROXY for https upstreams, HTTP_PROXY for
 * http, either in lower case too, unless NO_PROXY names the host ("*", a host or domain and
 * its subdomains, ".domain" for its subdomains only, with or without a port; unlike Go, no
 * CIDR ranges, and loopback hosts are proxied like any other, as Bun's fetch does). Only a socks5/socks5h one: http and https
 * proxies from the environment are Bun's fetch's own business (it reads the same variables),
 * but it refuses SOCKS (UnsupportedProxyProtocol on every request). */
export function environmentSocksProxy(upstream: string, env: Record<string, string | undefined>): URL | undefined {
  const target = new URL(upstream);
  const names = target.protocol === "https:" ? ["HTTPS_PROXY", "https_proxy"] : ["HTTP_PROXY", "http_proxy"];
  const text = names.map((n) => env[n]).find((v) => v !== undefined && v !== "");
  if (!text || !/^socks5h?:\/\//i.test(text) || bypassed(target, env.NO_PROXY ?? env.no_proxy ?? "")) return undefined;
  try {
    return parseProxyUrl(text);
  } catch (err) {
    throw new ProxyError(`${names[0]} (or ${names[1]}): ${(err as Error).message}`);
  }
}

function bypassed(target: URL, noProxy: string): boolean {
  const host = target.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  const port = target.port || (target.protocol === "https:" ? "443" : "80");
  return noProxy.split(",").some((raw) => {
    const entry = raw.trim().toLowerCase();
    if (entry === "*") return true;
    const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(entry);
    if (!match || (match[2] !== undefined && match[2] !== port)) return false;
    const given = match[1]!.replace(/^\[|\]$/g, "");
    // as Go: "example.org" is that host and its subdomains, ".example.org" the subdomains only
    const name = given.replace(/^\*?\./, "");
    return name !== "" && (host.endsWith(`.${name}`) || (host === name && name === given));
  });
}

/** A proxy fit to show in a log or error: without its user or password. */
export function displayProxy(proxy: URL): string {
  return `${proxy.protocol}//${proxy.host}`;
}

export interface UpstreamRequest {
  /** GET unless said */
  method?: "GET" | "HEAD";
  headers: Record<string, string>;
  signal: AbortSignal;
}

/** GET (or HEAD) `url` without following redirects; with a proxy, through it. A failure to reach or
 * use the proxy says which proxy. */
export type Send = (url: string, init: UpstreamRequest) => Promise<Response>;

export function sender(proxy: URL | undefined): Send {
  if (!proxy) return (url, init) => fetch(url, { ...init, redirect: "manual" });
  if (proxy.protocol === "http:" || proxy.protocol === "https:") {
    const href = proxy.href;
    return namingProxy(proxy, (url, init) => fetch(url, { ...init, redirect: "manual", proxy: href }));
  }
  // One agent per upstream: it keeps no connections (each request opens its own tunnel).
  const agent = new SocksProxyAgent(proxy);
  return namingProxy(proxy, (url, init) => nodeGet(url, init, agent));
}

/** Failures other than our own abort name the proxy (a dead proxy reads as what it is). */
function namingProxy(proxy: URL, send: Send): Send {
  const shown = displayProxy(proxy);
  return async (url, init) => {
    try {
      return await send(url, init);
    } catch (err) {
      if (init.signal.aborted) throw err;
      // the code stays: it tells a reset connection (worth a retry) from a refused one
      const code = (err as { code?: unknown })?.code;
      throw Object.assign(new Error(`via proxy ${shown}: ${(err as Error)?.message ?? err}`, { cause: err }), code === undefined ? {} : { code });
    }
  };
}

/** A GET through node:http(s) with `agent`, as a fetch Response. No Accept-Encoding is sent, so
 * the body is what the upstream stores (fetch decodes Content-Encoding; here nothing asks for
 * one). The signal aborts the request at any stage, the SOCKS handshake and the body
 * included (node:http's own `signal` option does not cut a handshake short in Bun). */
function nodeGet(url: string, init: UpstreamRequest, agent: SocksProxyAgent): Promise<Response> {
  const target = new URL(url);
  const request = target.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    if (init.signal.aborted) return reject(init.signal.reason);
    let res: IncomingMessage | null = null;
    const method = init.method ?? "GET";
    const req = request(target, { method, headers: init.headers, agent }, (answer) => {
      res = answer;
      const headers = new Headers();
      for (const [name, value] of Object.entries(answer.headers)) {
        for (const v of Array.isArray(value) ? value : value === undefined ? [] : [value]) headers.append(name, v);
      }
      const status = answer.statusCode ?? 0;
      if (status < 200 || status > 599) {
        answer.destroy();
        return reject(new Error(`HTTP status ${status} is not an answer to a ${method}`));
      }
      const empty = method === "HEAD" || status === 204 || status === 304;
      if (empty) answer.resume();
      resolve(new Response(empty ? null : (Readable.toWeb(answer) as ReadableStream<Uint8Array>), { status, headers }));
    });
    const abort = () => {
      const reason = init.signal.reason;
      reject(reason);
      req.destroy(reason);
      (res as IncomingMessage | null)?.destroy(reason);
    };
    init.signal.addEventListener("abort", abort, { once: true });
    req.on("close", () => {
      if (!res) init.signal.removeEventListener("abort", abort);
    });
    req.on("error", reject);
    req.end();
  });
}
