/** Progress of a long CLI run (fsck, import-go) on stderr: a bar redrawn in place on a
 * terminal; elsewhere (a log, a CI job) a plain line every 2 s and at each phase's end. */

export interface Progress {
  /** what is being done: a phase's name */
  label: string;
  done: number;
  /** null when unknown: a count without a bar */
  total: number | null;
}

export interface ProgressDisplay {
  update(p: Progress): void;
  /** clears the bar, so what follows starts on a clean line */
  end(): void;
}

export function progressDisplay(tty: boolean, command: string, write: (text: string) => void = (t) => process.stderr.write(t)): ProgressDisplay {
  let last = 0;
  let lastPhase = "";
  let drawn = false;
  const line = (p: Progress) => {
    if (p.total === null || p.total === 0) return `${p.label}: ${p.done}`;
    const done = Math.min(p.done, p.total);
    if (!tty) return `${p.label}: ${done}/${p.total}`;
    const width = 30;
    const filled = Math.round((done / p.total) * width);
    return `${p.label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${done}/${p.total}`;
  };
  return {
    update: (p) => {
      const now = Date.now();
      const phaseEnded = p.total !== null && p.done >= p.total;
      if (tty) {
        if (now - last < 100 && !phaseEnded && p.label === lastPhase) return;
        write(`\r\x1b[2K${line(p)}`);
        drawn = true;
      } else {
        if (now - last < 2000 && !(phaseEnded && lastPhase !== `${p.label}:ended`)) return;
        write(`${command}: ${line(p)}\n`);
      }
      last = now;
      lastPhase = phaseEnded ? `${p.label}:ended` : p.label;
    },
    end: () => {
      if (tty && drawn) write("\r\x1b[2K");
    },
  };
}
