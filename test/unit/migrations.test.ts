import { describe, expect, test } from "bun:test";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { migrationsFor, type Dialect } from "../../src/db/migrations.ts";

const root = join(import.meta.dir, "../../migrations");
const dialects: Dialect[] = ["sqlite", "postgres", "mysql"];

describe("embedded migrations", () => {
  for (const dialect of dialects) {
    test(`${dialect}: every migrations/${dialect}/*.sql file is embedded, in order, byte for byte`, async () => {
      // git keeps no empty directory: a dialect without migrations yet may have none
      const entries = await readdir(join(root, dialect)).catch((err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT") return [] as string[];
        throw err;
      });
      const files = entries.filter((f) => f.endsWith(".sql")).sort();
      const embedded = migrationsFor(dialect);
      expect(embedded.map((m) => `${m.name}.sql`)).toEqual(files);
      for (const m of embedded) expect(m.sql).toBe(await Bun.file(join(root, dialect, `${m.name}.sql`)).text());
    });

    test(`${dialect}: names are NNNN_words, numbered 1, 2, 3... without gaps`, () => {
      migrationsFor(dialect).forEach((m, i) => {
        expect(m.name).toMatch(/^\d{4}_[a-z0-9_]+$/);
        expect(Number(m.name.slice(0, 4))).toBe(i + 1);
      });
    });
  }

  test("the sqlite schema exists", () => {
    expect(migrationsFor("sqlite").length).toBeGreaterThan(0);
  });
});
