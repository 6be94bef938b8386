/** Reads a systemd unit file the way systemd does for the parts ncps's unit uses: sections,
 * repeated keys, `%` specifiers of system units, and ExecStart split on whitespace. Enough to
 * run the unit's command line in a test without systemd. */

export type Unit = Map<string, Map<string, string[]>>;

export function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = new Map();
      unit.set(header[1]!, section);
      continue;
    }
    const eq = line.indexOf("=");
    if (!section || eq < 0) throw new Error(`unit line outside a section or without '=': ${line}`);
    const key = line.slice(0, eq).trim();
    const values = section.get(key) ?? [];
    values.push(line.slice(eq + 1).trim());
    section.set(key, values);
  }
  return unit;
}

/** Every value of `key` in `[section]`, in file order. */
export function unitValues(unit: Unit, section: string, key: string): string[] {
  return unit.get(section)?.get(key) ?? [];
}

/** The directories systemd substitutes for a system unit's specifiers. */
export interface SpecifierDirs {
  /** %S, /var/lib */
  state: string;
  /** %C, /var/cache */
  cache: string;
  /** %E, /etc */
  config: string;
}

export function expandSpecifiers(value: string, dirs: SpecifierDirs): string {
  return value.replace(/%(.)/g, (whole, c: string) => {
    switch (c) {
      case "S":
        return dirs.state;
      case "C":
        return dirs.cache;
      case "E":
        return dirs.config;
      case "%":
        return "%";
      default:
        throw new Error(`unit uses specifier ${whole}, which this reader does not know`);
    }
  });
}

/** The environment systemd gives ExecStart: Environment= lines, then EnvironmentFile= files
 * (a leading "-" makes the file optional), later assignments winning. */
export async function unitEnvironment(unit: Unit, dirs: SpecifierDirs): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  for (const assignment of unitValues(unit, "Service", "Environment")) {
    const expanded = expandSpecifiers(assignment, dirs);
    const eq = expanded.indexOf("=");
    env[expanded.slice(0, eq)] = expanded.slice(eq + 1);
  }
  for (const entry of unitValues(unit, "Service", "EnvironmentFile")) {
    const optional = entry.startsWith("-");
    const path = expandSpecifiers(optional ? entry.slice(1) : entry, dirs);
    const file = Bun.file(path);
    if (!(await file.exists())) {
      if (optional) continue;
      throw new Error(`EnvironmentFile ${path} is missing`);
    }
    for (const line of (await file.text()).split("\n")) {
      const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
      if (m) env[m[1]!] = m[2]!.replace(/^"(.*)"$/, "$1");
    }
  }
  return env;
}

/** ExecStart as an argv (the unit's command line has no quoting). */
export function execStart(unit: Unit, dirs: SpecifierDirs): string[] {
  const [line, ...more] = unitValues(unit, "Service", "ExecStart");
  if (line === undefined || more.length > 0) throw new Error("expected exactly one ExecStart=");
  return expandSpecifiers(line, dirs).split(/\s+/);
}
