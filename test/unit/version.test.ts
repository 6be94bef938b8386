import { expect, test } from "bun:test";

test("ncps --version prints the version", async () => {
  const proc = Bun.spawn(["bun", "src/main.ts", "--version"], { stdout: "pipe" });
  const out = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  expect(out).toMatch(/^ncps \d+\.\d+\.\d+/);
});
