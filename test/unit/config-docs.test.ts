import { expect, test } from "bun:test";
import { join } from "node:path";
import { beginMarker, endMarker, renderOptionsSection } from "../../src/config/docs.ts";
import { options } from "../../src/config/options.ts";

const readme = await Bun.file(join(import.meta.dir, "..", "..", "README.md")).text();

test("the README option table is up to date (fix: bun scripts/gen-options-table.ts)", () => {
  const section = readme.slice(readme.indexOf(beginMarker), readme.indexOf(endMarker) + endMarker.length);
  expect(section).toBe(renderOptionsSection());
});

test("the README names every flag, variable and config key, deprecated ones included", () => {
  for (const o of options) {
    const names = [
      `--${o.flag}`,
      ...o.env,
      ...(o.configKey ? [o.configKey] : []),
      ...(o.deprecated?.flags ?? []).map((f) => `--${f}`),
      ...(o.deprecated?.env ?? []),
      ...(o.deprecated?.configKeys ?? []),
    ];
    for (const name of names) expect(readme).toContain(`\`${name}\``);
  }
});
