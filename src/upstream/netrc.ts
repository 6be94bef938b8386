/** A minimal .netrc reader: `machine`, `login`, `password`, `default`; tokens separated by
 * any whitespace. Nix and curl read the same file, so users keep one set of credentials. */

export interface NetrcEntry {
  login: string;
  password: string;
}

export type Netrc = Map<string, NetrcEntry>; // host -> credentials; "" is `default`

export function parseNetrc(text: string): Netrc {
  const tokens = text
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("#"))
    .join("\n")
    .split(/\s+/)
    .filter(Boolean);
  const entries: Netrc = new Map();
  let host: string | null = null;
  let entry: NetrcEntry = { login: "", password: "" };
  const flush = () => {
    if (host !== null && !entries.has(host)) entries.set(host, entry);
  };
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i];
    if (token === "machine" || token === "default") {
      flush();
      host = token === "machine" ? (tokens[++i] ?? "") : "";
      entry = { login: "", password: "" };
    } else if (token === "login" || token === "password") {
      entry[token] = tokens[++i] ?? "";
    } else if (token === "macdef") {
      break; // macros run to the end of a paragraph; nothing we need follows reliably
    }
  }
  flush();
  return entries;
}

/** `Authorization` header value for `url`, if the netrc names its host (or has a default). */
export function netrcAuthorization(netrc: Netrc, url: URL): string | undefined {
  const entry = netrc.get(url.hostname) ?? netrc.get("");
  if (!entry) return undefined;
  return basicAuthorization(entry.login, entry.password);
}

export function basicAuthorization(login: string, password: string): string {
  return "Basic " + Buffer.from(`${login}:${password}`).toString("base64");
}
