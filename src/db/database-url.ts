/** The `--cache-database-url` forms Go ncps accepts, parsed into a typed target.
 *
 *   sqlite:/var/lib/ncps/db.sqlite      sqlite:///var/lib/ncps/db.sqlite
 *   sqlite:relative/db.sqlite           (resolved against the working directory)
 *   postgres://user:pass@host:5432/db?sslmode=require   (also postgresql://)
 *   postgres:///db?host=/run/postgresql                  (libpq's socket form)
 *   postgres+unix:///run/postgresql/db                   (socket directory, then database)
 *   mysql://user:pass@host:3306/db      mysql://user:pass@/db?socket=/run/mysqld/mysqld.sock
 *   mysql+unix:///run/mysqld/mysqld.sock/db              (socket file, then database)
 *
 * Errors are one line and never contain the URL itself (it may hold a password). */
import { resolve } from "node:path";

export class DatabaseUrlError extends Error {
  override name = "DatabaseUrlError";
}

export interface SqliteUrl {
  dialect: "sqlite";
  /** absolute file path, or ":memory:" */
  path: string;
  redacted: string;
}

/** How to reach a server: TCP, or a Unix socket. */
export type ServerAddress =
  | { kind: "tcp"; host: string; port: number }
  /** postgres: the directory holding `.s.PGSQL.<port>`; mysql: the socket file itself */
  | { kind: "unix"; socketPath: string; port: number };

export interface ServerUrl {
  dialect: "postgres" | "mysql";
  address: ServerAddress;
  database: string;
  user: string | null;
  password: string | null;
  /** postgres only (disable, allow, prefer, require, verify-ca, verify-full); null when unset */
  sslmode: string | null;
  /** remaining query parameters, passed to the driver */
  params: Record<string, string>;
  /** the URL with the password (and any secret parameter) replaced by `***` */
  redacted: string;
}

export type DatabaseUrl = SqliteUrl | ServerUrl;

const SSL_MODES = new Set(["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]);
/** query parameters that carry secrets and are masked in `redacted` */
const SECRET_PARAMS = new Set(["password", "pass", "passwd", "sslpassword"]);
const DEFAULT_PORT = { postgres: 5432, mysql: 3306 } as const;

export function parseDatabaseUrl(url: string): DatabaseUrl {
  const trimmed = url.trim();
  if (trimmed === "") throw new DatabaseUrlError("database URL is empty");
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(trimmed);
  if (!m) throw new DatabaseUrlError("database URL has no scheme: expected sqlite:, postgres://, postgresql://, mysql:// (or +unix)");
  const scheme = m[1]!.toLowerCase();
  const rest = trimmed.slice(m[0].length);
  switch (scheme) {
    case "sqlite":
    case "sqlite3":
      return parseSqlite(scheme, rest);
    case "postgres":
    case "postgresql":
      return parseServer("postgres", scheme, rest, false);
    case "postgres+unix":
    case "postgresql+unix":
      return parseServer("postgres", scheme, rest, true);
    case "mysql":
      return parseServer("mysql", scheme, rest, false);
    case "mysql+unix":
      return parseServer("mysql", scheme, rest, true);
    default:
      throw new DatabaseUrlError(
        `unsupported database URL scheme "${scheme.slice(0, 32)}": expected sqlite, postgres, postgresql, mysql (or postgres+unix, postgresql+unix, mysql+unix)`,
      );
  }
}

function parseSqlite(scheme: string, rest: string): SqliteUrl {
  // Query parameters (Go driver options such as _journal_mode) are ignored: ncps sets its own.
  const q = rest.indexOf("?");
  let raw = q === -1 ? rest : rest.slice(0, q);
  if (raw.startsWith("//")) {
    // sqlite:///abs/path has an empty authority; sqlite://x/... would make "x" a host, which
    // Go ncps silently dropped: refuse it rather than guess.
    raw = raw.slice(2);
    if (!raw.startsWith("/")) {
      throw new DatabaseUrlError(`${scheme}:// URL must be followed by an absolute path (sqlite:///path/db.sqlite or sqlite:/path/db.sqlite)`);
    }
  }
  const decoded = decodePart(raw, "path");
  if (decoded === "") throw new DatabaseUrlError("sqlite URL has no file path: expected sqlite:/path/db.sqlite");
  if (decoded.includes("\0")) throw new DatabaseUrlError("sqlite path contains a NUL byte");
  const path = decoded === ":memory:" ? decoded : resolve(decoded);
  return { dialect: "sqlite", path, redacted: `sqlite:${path}` };
}

function parseServer(dialect: "postgres" | "mysql", scheme: string, rest: string, unix: boolean): ServerUrl {
  if (!rest.startsWith("//")) throw new DatabaseUrlError(`${scheme} URL must start with ${scheme}://`);
  rest = rest.slice(2);
  const hashAt = rest.indexOf("#");
  if (hashAt !== -1) rest = rest.slice(0, hashAt);
  const q = rest.indexOf("?");
  const query = q === -1 ? "" : rest.slice(q + 1);
  const beforeQuery = q === -1 ? rest : rest.slice(0, q);
  // The authority ends at the first "/" after the last "@" (passwords may hold "/" or "@"
  // when the user forgot to percent-encode them).
  const at = beforeQuery.lastIndexOf("@");
  const slash = beforeQuery.indexOf("/", at + 1);
  const authority = slash === -1 ? beforeQuery : beforeQuery.slice(0, slash);
  const path = slash === -1 ? "" : beforeQuery.slice(slash);

  const userinfo = at === -1 ? null : authority.slice(0, at);
  const hostport = at === -1 ? authority : authority.slice(at + 1);
  let user: string | null = null;
  let password: string | null = null;
  if (userinfo !== null) {
    const colon = userinfo.indexOf(":");
    user = decodePart(colon === -1 ? userinfo : userinfo.slice(0, colon), "user name") || null;
    password = colon === -1 ? null : decodePart(userinfo.slice(colon + 1), "password");
  }

  const params = parseQuery(query);
  let sslmode: string | null = null;
  if (dialect === "postgres" && "sslmode" in params) {
    sslmode = params.sslmode!;
    delete params.sslmode;
    if (!SSL_MODES.has(sslmode)) {
      throw new DatabaseUrlError(`invalid sslmode "${sslmode.slice(0, 32)}": expected one of ${[...SSL_MODES].join(", ")}`);
    }
  }

  const { host, port } = parseHostPort(hostport, DEFAULT_PORT[dialect], scheme);
  const segments = path.split("/").filter((s) => s !== "");
  let address: ServerAddress;
  let database: string;
  if (unix) {
    // <socket>/<database>: the last segment names the database, the rest is the socket
    if (host !== "") throw new DatabaseUrlError(`${scheme} URL must not name a host: expected ${scheme}:///path/to/socket/dbname`);
    if (segments.length < 2) throw new DatabaseUrlError(`${scheme} URL needs a socket path and a database name: expected ${scheme}:///path/to/socket/dbname`);
    database = decodePart(segments[segments.length - 1]!, "database name");
    address = { kind: "unix", socketPath: "/" + segments.slice(0, -1).map((s) => decodePart(s, "socket path")).join("/"), port };
  } else {
    if (segments.length > 1) throw new DatabaseUrlError(`${scheme} URL path must be just the database name`);
    database = segments.length === 1 ? decodePart(segments[0]!, "database name") : "";
    const socketParam = dialect === "postgres" && params.host?.startsWith("/") ? "host" : dialect === "mysql" && params.socket ? "socket" : null;
    if (socketParam) {
      if (host !== "") throw new DatabaseUrlError(`${scheme} URL names both a host and a socket (${socketParam}=)`);
      address = { kind: "unix", socketPath: params[socketParam]!, port };
      delete params[socketParam];
    } else {
      if (host === "") throw new DatabaseUrlError(`${scheme} URL has no host: expected ${scheme}://user:password@host:port/dbname`);
      address = { kind: "tcp", host, port };
    }
  }
  if (database === "") throw new DatabaseUrlError(`${scheme} URL has no database name`);

  const redacted = redact(scheme, user, password, hostport, path, query);
  return { dialect, address, database, user, password, sslmode, params, redacted };
}

function parseHostPort(hostport: string, defaultPort: number, scheme: string): { host: string; port: number } {
  let host = hostport;
  let portText: string | null = null;
  if (hostport.startsWith("[")) {
    const close = hostport.indexOf("]");
    if (close === -1) throw new DatabaseUrlError(`${scheme} URL has an unterminated IPv6 address`);
    host = hostport.slice(1, close);
    const after = hostport.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) throw new DatabaseUrlError(`${scheme} URL has garbage after the IPv6 address`);
      portText = after.slice(1);
    }
  } else {
    const colon = hostport.lastIndexOf(":");
    if (colon !== -1) {
      host = hostport.slice(0, colon);
      portText = hostport.slice(colon + 1);
    }
  }
  let port = defaultPort;
  if (portText !== null && portText !== "") {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      // not echoed: with a missing "@", the "port" may be a password
      throw new DatabaseUrlError(`${scheme} URL has an invalid port: expected a number 1-65535`);
    }
    port = Number(portText);
  }
  return { host: decodePart(host, "host"), port };
}

function parseQuery(query: string): Record<string, string> {
  const params: Record<string, string> = {};
  if (query === "") return params;
  for (const pair of query.split("&")) {
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    const key = decodePart((eq === -1 ? pair : pair.slice(0, eq)).replaceAll("+", " "), "query parameter");
    const value = eq === -1 ? "" : decodePart(pair.slice(eq + 1).replaceAll("+", " "), `query parameter ${key}`);
    params[key] = value;
  }
  return params;
}

function decodePart(text: string, what: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    // the text may be a password: say which part is wrong, never echo it
    throw new DatabaseUrlError(`database URL has an invalid percent-encoding in the ${what}`);
  }
}

function redact(scheme: string, user: string | null, password: string | null, hostport: string, path: string, query: string): string {
  let userinfo = "";
  if (user !== null || password !== null) {
    userinfo = `${user === null ? "" : encodeURIComponent(user)}${password === null ? "" : ":***"}@`;
  }
  const safeQuery = query
    .split("&")
    .filter((p) => p !== "")
    .map((pair) => {
      const eq = pair.indexOf("=");
      const key = eq === -1 ? pair : pair.slice(0, eq);
      let name: string;
      try {
        name = decodeURIComponent(key).toLowerCase();
      } catch {
        name = key.toLowerCase();
      }
      return SECRET_PARAMS.has(name) ? `${key}=***` : pair;
    })
    .join("&");
  return `${scheme}://${userinfo}${hostport}${path}${safeQuery === "" ? "" : "?" + safeQuery}`;
}
