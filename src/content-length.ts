/** A message's declared Content-Length: null when there is none or it is not a plain count of
 * bytes (a forged "1e9", "-1" or "0x10" is no length at all, never NaN or a negative). */
export function declaredLength(headers: Headers): number | null {
  const header = headers.get("content-length");
  return header !== null && /^\d{1,15}$/.test(header) ? Number(header) : null;
}
