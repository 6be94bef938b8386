/** An upstream URL as configured. `https://cache.example.org?priority=10` is the Go ncps's
 * way to rank an upstream: the parameter sets the priority (lower is preferred, as in
 * nix-cache-info, and wins over the upstream's own) and is never sent to the upstream. */
export class UpstreamUrlError extends Error {
  override name = "UpstreamUrlError";
}

export interface UpstreamUrl {
  /** Without the priority parameter and without a trailing slash. */
  url: string;
  /** Absent when not given (or 0, which the Go ncps reads as "the default"). */
  priority?: number;
}

export function parseUpstreamUrl(text: string): UpstreamUrl {
  const shown = withoutCredentials(text);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UpstreamUrlError(`invalid upstream URL "${shown}"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UpstreamUrlError(`unknown upstream URL scheme "${url.protocol}" in "${shown}" (use http or https)`);
  }
  if (url.hostname === "") throw new UpstreamUrlError(`upstream URL "${shown}" has no host`);
  let priority: number | undefined;
  const given = url.searchParams.get("priority");
  if (given !== null) {
    if (!/^\d{1,5}$/.test(given) || Number(given) > 65_535) {
      throw new UpstreamUrlError(`upstream URL "${shown}": priority must be a whole number from 0 to 65535, got "${given}"`);
    }
    priority = Number(given) || undefined;
    url.searchParams.delete("priority");
  }
  return { url: url.href.replace(/\/$/, "").replace(/\/\?/, "?"), ...(priority !== undefined ? { priority } : {}) };
}

/** An upstream URL fit to show (logs, errors, the status page): without any user or password
 * in it. Text, so that a URL too broken to parse is shown without them as well. */
export function withoutCredentials(url: string): string {
  return url.replace(/^([a-z][a-z\d+.-]*:\/\/)[^/?#]*@/i, "$1");
}

/** How ncps names a configured upstream (Upstream.url, and what narinfo rows record): its
 * URL without the priority parameter, user, password or trailing slash. */
export function upstreamIdentity(text: string): string {
  return withoutCredentials(parseUpstreamUrl(text).url);
}

/** Whether `recorded` (a narinfo row's upstream) names the upstream whose identity is `url`:
 * rows written before the URL lost its user and password still hold them. */
export function sameUpstream(recorded: string | null, url: string): boolean {
  return recorded !== null && withoutCredentials(recorded) === url;
}
