/** The one parser of a `--cache-redis-addrs` entry, called by config validation and by the
 * Redis locker, so both accept exactly the same addresses. Apart from ioredis so validation
 * does not load the driver.
 *
 * The rule is the Go ncps's: go-redis dials the address as given, and Go's dialer refuses an
 * address without a port ("missing port in address"), so the port is required. */

export class RedisAddrError extends Error {
  override name = "RedisAddrError";
}

export interface RedisAddr {
  host: string;
  port: number;
}

/** `host:port` or `[v6addr]:port`, port 1-65535; no scheme, path or white space. */
export function parseRedisAddr(text: string): RedisAddr {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:/[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (!match) throw new RedisAddrError(`invalid redis address ${JSON.stringify(text)} (use host:port or [v6addr]:port)`);
  if (port < 1 || port > 65535) throw new RedisAddrError(`invalid redis address ${JSON.stringify(text)}: port must be 1-65535`);
  return { host: match[1] ?? match[2]!, port };
}

/** `host:port` as shown in messages, IPv6 hosts in brackets. */
export function formatRedisAddr({ host, port }: RedisAddr): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
