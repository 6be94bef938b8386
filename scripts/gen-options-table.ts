#!/usr/bin/env bun
/** Rewrites the README's option table from src/config/options.ts.
 * `--check`: change nothing, exit 1 when the README is out of date. */
import { join } from "node:path";
import { replaceOptionsSection } from "../src/config/docs.ts";

const readmePath = join(import.meta.dir, "..", "README.md");
const current = await Bun.file(readmePath).text();
const updated = replaceOptionsSection(current);

if (process.argv.includes("--check")) {
  if (updated !== current) {
    console.error("README.md option table is out of date: run `bun scripts/gen-options-table.ts`");
    process.exit(1);
  }
} else if (updated !== current) {
  await Bun.write(readmePath, updated);
  console.log("README.md option table updated");
}
