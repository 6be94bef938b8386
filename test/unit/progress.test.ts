/** The progress of a long CLI run off a terminal: a plain line now and then, and one at the
 * end of each phase, never twice. */
import { expect, test } from "bun:test";
import { progressDisplay } from "../../src/cli/progress.ts";

test("off a terminal: the first count, then each phase's end once, however fast the counts come", () => {
  const lines: string[] = [];
  const progress = progressDisplay(false, "fsck", (text) => lines.push(text));
  for (let done = 0; done <= 3; done++) progress.update({ label: "narinfos", done, total: 3 });
  progress.update({ label: "narinfos", done: 3, total: 3 });
  for (let done = 0; done <= 2; done++) progress.update({ label: "NARs", done, total: 2 });
  progress.end();
  expect(lines).toEqual(["fsck: narinfos: 0/3\n", "fsck: narinfos: 3/3\n", "fsck: NARs: 2/2\n"]);
});
