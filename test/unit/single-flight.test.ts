import { expect, test } from "bun:test";
import { SingleFlight } from "../../src/single-flight.ts";

test("concurrent callers share one run; a later call runs again", async () => {
  const flight = new SingleFlight<string, number>();
  let runs = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const work = async () => {
    runs++;
    await gate;
    return runs;
  };
  const a = flight.run("k", work);
  const b = flight.run("k", work);
  expect(flight.size).toBe(1);
  release();
  expect(await Promise.all([a, b])).toEqual([1, 1]);
  expect(flight.size).toBe(0);
  expect(await flight.run("k", work)).toBe(2);
});

test("a failure is shared and then forgotten", async () => {
  const flight = new SingleFlight<string, number>();
  const failing = flight.run("k", async () => {
    throw new Error("nope");
  });
  await expect(failing).rejects.toThrow("nope");
  expect(await flight.run("k", async () => 7)).toBe(7);
});
