/** /metrics as a test reads it: parsed by a real Prometheus text-format parser (not by our
 * own code), then summed over the series whose labels match. */
import parsePrometheusTextFormat from "parse-prometheus-text-format";

export interface Scrape {
  names: Set<string>;
  /** The sum of a counter's or gauge's series matching `labels` (0 when none); for a
   * histogram, of its observation counts. */
  value(name: string, labels?: Record<string, string>): number;
}

/** The parser keeps one unlabelled set of buckets per histogram (it drops the labels), so each
 * histogram's `_count` series go to it as a counter family of their own, `<name>_count`;
 * everything else is parsed as it was sent. */
function countsAsCounters(text: string): string {
  const histograms = new Set([...text.matchAll(/^# TYPE (\S+) histogram$/gm)].map((m) => m[1]!));
  const kept: string[] = [];
  const counts = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const meta = /^# (?:HELP|TYPE|UNIT) (\S+)/.exec(line);
    const name = meta ? meta[1]! : /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line)?.[1];
    const family = name?.replace(/_(bucket|sum|count)$/, "");
    if (family === undefined || !histograms.has(meta ? name! : family)) {
      kept.push(line);
      continue;
    }
    if (!meta && name!.endsWith("_count")) counts.set(family, [...(counts.get(family) ?? []), line]);
  }
  for (const [family, lines] of counts) kept.push(`# HELP ${family}_count observations`, `# TYPE ${family}_count counter`, ...lines);
  return kept.join("\n") + "\n";
}

export function parseMetrics(text: string): Scrape {
  const families = parsePrometheusTextFormat(countsAsCounters(text));
  const histograms = new Set([...text.matchAll(/^# TYPE (\S+) histogram$/gm)].map((m) => m[1]!));
  const byName = new Map(families.map((f) => [f.name, f]));
  return {
    names: new Set([...byName.keys()].map((n) => (histograms.has(n.replace(/_count$/, "")) ? n.replace(/_count$/, "") : n))),
    value(name, labels = {}) {
      const family = byName.get(histograms.has(name) ? `${name}_count` : name);
      if (!family) return 0;
      let total = 0;
      for (const sample of family.metrics) {
        if (!Object.entries(labels).every(([k, v]) => sample.labels?.[k] === v)) continue;
        total += Number(sample.value ?? 0);
      }
      return total;
    },
  };
}

export async function scrape(baseUrl: string): Promise<Scrape> {
  const res = await fetch(`${baseUrl}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return parseMetrics(await res.text());
}
