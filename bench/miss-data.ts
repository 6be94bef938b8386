/** What the miss benchmarks (miss-path.ts, miss-floor.ts) share: NAR-sized files of real
 * bytes and their compressed forms, made once and kept between runs, and curl clients timed
 * together. */
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const MiB = 1024 * 1024;
export const dataDir = join(tmpdir(), "ncps-miss-bench-data");

/** A NAR-sized slice of real files (`tar` of /usr, cut to size, so it compresses as a real
 * NAR does): `mb` MiB from `offsetMb` on, made once under $TMPDIR/ncps-miss-bench-data. */
export async function rawNar(name: string, mb: number, offsetMb: number): Promise<string> {
  await mkdir(dataDir, { recursive: true });
  const path = join(dataDir, `${name}.nar`);
  if (!existsSync(path)) {
    await Bun.$`tar cf - /usr/lib /usr/bin /usr/share 2>/dev/null | tail -c +${offsetMb * MiB + 1} | head -c ${mb * MiB} > ${path}.tmp && mv ${path}.tmp ${path}`.quiet();
  }
  return path;
}

export type Compression = "none" | "zstd" | "xz";
export const EXT: Record<Compression, string> = { none: "", zstd: ".zst", xz: ".xz" };

/** The NAR at `raw` as an upstream would serve it in compression `c` (made once, beside it). */
export async function compressed(raw: string, c: Compression): Promise<string> {
  if (c === "none") return raw;
  const path = raw + EXT[c];
  if (!existsSync(path)) {
    if (c === "zstd") await Bun.$`zstd -q -3 -T2 -f ${raw} -o ${path}.tmp && mv ${path}.tmp ${path}`.quiet();
    else await Bun.$`xz -3 -T2 -c ${raw} > ${path}.tmp && mv ${path}.tmp ${path}`.quiet();
  }
  return path;
}

/** Seconds for curl to fetch every URL, all at once; throws unless each answered 200. */
export async function curlAll(urls: string[]): Promise<number> {
  const started = performance.now();
  const results = await Promise.all(
    urls.map(async (url) => {
      const p = Bun.spawn(["curl", "-sf", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url], { stdout: "pipe" });
      const out = await new Response(p.stdout).text();
      if ((await p.exited) !== 0) throw new Error(`curl ${url} failed: ${out}`);
      return out;
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  for (const r of results) if (!r.startsWith("200 ")) throw new Error(`unexpected answer ${r}`);
  return seconds;
}
