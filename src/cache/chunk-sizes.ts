/** The chunk sizes a cache chunks with are fixed at its first use of CDC: chunks cut with
 * other sizes would share almost nothing with those stored before, so every NAR would be
 * stored again. The first replica to enable CDC records its sizes in the database; a start
 * with other sizes is refused (as the Go ncps does). */
import type { Config } from "../config/options.ts";
import type { MetadataStore } from "../db/metadata-store.ts";
import type { ChunkSizes } from "./chunker.ts";

const CONFIG_KEY = "cdc_chunk_sizes";

function format(s: ChunkSizes): string {
  return `${s.min}/${s.avg}/${s.max}`;
}

/** The sizes --cache-cdc-min/-avg/-max set. */
export function configuredChunkSizes(config: Pick<Config, "cacheCdcMin" | "cacheCdcAvg" | "cacheCdcMax">): ChunkSizes {
  return { min: config.cacheCdcMin, avg: config.cacheCdcAvg, max: config.cacheCdcMax };
}

/** Record `sizes` if none are, else check they are the recorded ones; throws one line when not. */
export async function fixChunkSizes(db: MetadataStore, sizes: ChunkSizes): Promise<void> {
  const recorded = await db.setConfigIfAbsent(CONFIG_KEY, format(sizes));
  if (recorded !== format(sizes)) {
    throw new Error(
      `--cache-cdc-min/-avg/-max are ${format(sizes)} but this cache's chunks were cut with ${recorded}; chunks of other sizes would share nothing with the stored ones: start with ${recorded}`,
    );
  }
}

/** The recorded sizes, or null when CDC was never enabled on this database. */
export async function recordedChunkSizes(db: MetadataStore): Promise<ChunkSizes | null> {
  const text = await db.getConfig(CONFIG_KEY);
  const m = text === null ? null : /^(\d+)\/(\d+)\/(\d+)$/.exec(text);
  return m ? { min: Number(m[1]), avg: Number(m[2]), max: Number(m[3]) } : null;
}
