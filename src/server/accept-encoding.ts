/** Whether a request's Accept-Encoding (RFC 9110 12.5.3) accepts a content coding: named
 * with a q above 0, or covered by "*" when not named. No header: only identity. */
export function acceptsEncoding(header: string | null, coding: string): boolean {
  if (!header) return false;
  let wildcard = false;
  for (const entry of header.split(",")) {
    const [name = "", ...params] = entry.split(";").map((p) => p.trim().toLowerCase());
    const q = params.find((p) => p.startsWith("q="));
    const acceptable = q === undefined || Number(q.slice(2)) > 0;
    if (name === coding) return acceptable;
    if (name === "*") wildcard = acceptable;
  }
  return wildcard;
}
