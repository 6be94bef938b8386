import { expect, test } from "bun:test";
import { createLogger } from "../../src/telemetry/logger.ts";

test("an Error in a log field keeps its name, message, code, stack and causes", () => {
  const lines: string[] = [];
  const logger = createLogger("info", {}, (line) => lines.push(line));
  const root = Object.assign(new Error("disk full"), { code: "ENOSPC" });
  logger.error("storing failed", { error: new Error("commit failed", { cause: root }) });
  const record = JSON.parse(lines[0]!);
  expect(record.error.name).toBe("Error");
  expect(record.error.message).toBe("commit failed");
  expect(record.error.stack).toContain("logger.test.ts");
  expect(record.error.cause).toMatchObject({ message: "disk full", code: "ENOSPC" });
});

test("records below the level are not written", () => {
  const lines: string[] = [];
  createLogger("warn", {}, (line) => lines.push(line)).info("quiet");
  expect(lines).toEqual([]);
});
