#!/usr/bin/env bun
import { version, commit } from "./version.ts";

if (process.argv.includes("--version")) {
  console.log(`ncps ${version} (${commit})`);
  process.exit(0);
}
console.log(`ncps ${version}: serve is not implemented yet`);
