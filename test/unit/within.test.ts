import { describe, expect, test } from "bun:test";
import { TIMED_OUT, within } from "../../src/within.ts";

describe("within", () => {
  test("work that settles in time gives its value, or its rejection", async () => {
    expect(await within(1000, Promise.resolve(42))).toBe(42);
    expect(await within(1000, Bun.sleep(5).then(() => "late but in time"))).toBe("late but in time");
    await expect(within(1000, Promise.reject(new Error("broken")))).rejects.toThrow("broken");
  });

  test("work that does not settle in time gives TIMED_OUT at the deadline", async () => {
    const started = performance.now();
    expect(await within(50, new Promise(() => {}))).toBe(TIMED_OUT);
    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
  });

  test("no timer is left behind: a process whose work settled exits at once", async () => {
    const script = `import { within } from ${JSON.stringify(new URL("../../src/within.ts", import.meta.url).pathname)};
await within(60_000, Promise.resolve());`;
    const started = performance.now();
    const proc = Bun.spawn(["bun", "-e", script], { stderr: "pipe" });
    expect(await proc.exited).toBe(0);
    expect(performance.now() - started).toBeLessThan(30_000);
  });
});
