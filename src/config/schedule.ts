/** When the LRU eviction runs on its own: `--cache-lru-schedule` as the Go ncps reads it
 * (robfig/cron's standard parser: five fields, `@daily`-style names, `@every <duration>`),
 * in `--cache-lru-schedule-timezone`. One parser: config validation calls `parseSchedule`,
 * and the scheduler runs what it returns. Five-field patterns and names go to croner (the
 * library @elysiajs/cron wraps); `@every` is ours, with the Go duration syntax. It lives with
 * the config because it parses an option; the composition root starts it. */
import { Cron } from "croner";
import { parseDuration } from "./values.ts";

export type Schedule =
  | { kind: "every"; /** milliseconds */ interval: number; text: string }
  | { kind: "cron"; pattern: string; timezone: string | undefined; text: string };

export class ScheduleError extends Error {
  override name = "ScheduleError";
}

const NAMES = new Set(["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]);

/** A schedule, or a ScheduleError saying what is wrong with it (the timezone included). */
export function parseSchedule(text: string, timezone?: string): Schedule {
  const spec = text.trim();
  if (timezone !== undefined) checkTimezone(timezone);
  const every = /^@every\s+(\S+)$/.exec(spec);
  if (every) {
    let interval: number;
    try {
      interval = parseDuration(every[1]!);
    } catch (err) {
      throw new ScheduleError(`"${text}": ${(err as Error).message}`);
    }
    if (!(interval >= 1000)) throw new ScheduleError(`"${text}": an @every interval must be at least 1s`);
    return { kind: "every", interval, text: spec };
  }
  const pattern = spec === "@midnight" ? "@daily" : spec;
  if (!NAMES.has(spec) && spec.split(/\s+/).length !== 5) {
    throw new ScheduleError(`"${text}": expected five cron fields (minute hour day month weekday), @daily-style or @every <duration>`);
  }
  try {
    new Cron(pattern, { paused: true, timezone }).stop();
  } catch (err) {
    throw new ScheduleError(`"${text}": ${(err as Error).message.replace(/^CronPattern: /, "")}`);
  }
  return { kind: "cron", pattern, timezone, text: spec };
}

function checkTimezone(timezone: string): void {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: timezone });
  } catch {
    throw new ScheduleError(`unknown time zone "${timezone}" (use an IANA name like Europe/Berlin)`);
  }
}

/** Runs `run` on the schedule until stopped. A run still going when the next is due is not
 * started twice: the caller's own guard decides (eviction skips a pass while one runs). */
export function startSchedule(schedule: Schedule, run: () => void): { stop(): void } {
  if (schedule.kind === "every") {
    const timer = setInterval(run, schedule.interval);
    timer.unref();
    return { stop: () => clearInterval(timer) };
  }
  const job = new Cron(schedule.pattern, { timezone: schedule.timezone, unref: true }, run);
  return { stop: () => job.stop() };
}

/** When the schedule runs next after `from` (for the log line at start). */
export function nextRun(schedule: Schedule, from = new Date()): Date | null {
  if (schedule.kind === "every") return new Date(from.getTime() + schedule.interval);
  const job = new Cron(schedule.pattern, { paused: true, timezone: schedule.timezone });
  try {
    return job.nextRun(from);
  } finally {
    job.stop();
  }
}
