/** HTTP Range for NARs: one `bytes=` range (Nix resumes with `bytes=N-`). */
import type { ByteRange } from "../storage/blob-store.ts";

/** The range to send, null to send everything (no or unusable header), or "unsatisfiable". */
export function resolveRange(header: string | null, size: number): ByteRange | null | "unsatisfiable" {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return null; // multi-range or garbage: ignore, send all
  let start: number;
  let end: number;
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0) return "unsatisfiable";
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (end < start && m[2] !== "") return null; // malformed per RFC 9110: ignore
  }
  if (start >= size || !Number.isSafeInteger(start)) return "unsatisfiable";
  return { start, end };
}
