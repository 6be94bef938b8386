/** The middle of a set of figures (the mean of the two middle ones for an even count): what
 * the benchmarks report, so one run that a neighbour slowed does not move it. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}
