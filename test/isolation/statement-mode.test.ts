import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { type Harness, startHarness } from "../../src/testing/harness.js";
import { defineTool } from "../../src/tools/define-tool.js";
import { notesMigrations } from "../../src/tools/demo/notes.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";
import { structured } from "../support/tool-results.js";

/**
 * Tools declared `transaction: "statement"` run each `ctx.db.query` as its own tenant-bound
 * transaction (on PostgreSQL, binding and statement in one round trip). Isolation must be exactly
 * that of the default per-call transaction; only atomicity across statements differs.
 */

const pgUp = await serviceGate("postgres");

const statement = "statement" as const;

/** A tool that inserts a note, then throws: whether the insert stays depends on `transaction`. */
function addThenFail(name: string, transaction: "call" | "statement") {
  return defineTool({
    name,
    description: `inserts, then throws (transaction: ${transaction})`,
    input: z.object({ title: z.string() }),
    transaction,
    async run(input, ctx) {
      await ctx.db.query("INSERT INTO notes (title, body) VALUES ($1, '')", [input.title]);
      throw new Error("after the insert");
    },
  });
}
const tools = [
  defineTool({
    name: "s_add",
    description: "insert a note (statement mode)",
    input: z.object({ title: z.string() }),
    transaction: statement,
    async run(input, ctx) {
      const { rows } = await ctx.db.query<{ title: string }>(
        "INSERT INTO notes (title, body) VALUES ($1, '') RETURNING title",
        [input.title],
      );
      return rows[0];
    },
  }),
  defineTool({
    name: "s_list",
    description: "list note titles (statement mode)",
    input: z.object({}),
    transaction: statement,
    async run(_input, ctx) {
      const { rows } = await ctx.db.query<{ title: string }>("SELECT title FROM notes ORDER BY title");
      return { titles: rows.map((r) => r.title) };
    },
  }),
  defineTool({
    name: "s_rebind",
    description: "tries to rebind to another tenant in one statement, then reads in the next",
    input: z.object({ other: z.string() }),
    transaction: statement,
    async run(input, ctx) {
      await ctx.db.query("SELECT set_config('app.tenant_id', $1, true)", [input.other]);
      const { rows } = await ctx.db.query<{ title: string }>("SELECT title FROM notes ORDER BY title");
      const setting = await ctx.db.query<{ t: string }>("SELECT current_setting('app.tenant_id') AS t");
      return { titles: rows.map((r) => r.title), setting: setting.rows[0]!.t };
    },
  }),
  addThenFail("s_add_then_fail", "statement"),
  addThenFail("c_add_then_fail", "call"),
  defineTool({
    name: "c_add_then_not_json",
    description: "inserts, then returns what JSON cannot carry: the call fails and nothing is kept",
    input: z.object({ title: z.string() }),
    async run(input, ctx) {
      await ctx.db.query("INSERT INTO notes (title, body) VALUES ($1, '')", [input.title]);
      return { n: 1n };
    },
  }),
  defineTool({
    name: "s_bad_sql",
    description: "a failing statement, then a good one",
    input: z.object({}),
    transaction: statement,
    async run(_input, ctx) {
      const failed = await ctx.db.query("SELECT 1/0").then(
        () => "no",
        (e: { code?: string }) => e.code,
      );
      const { rows } = await ctx.db.query<{ n: number }>("SELECT count(*)::int AS n FROM notes");
      return { failed, n: rows[0]!.n };
    },
  }),
];

const combos = [
  { name: "PGlite, row_level_security", isolation: "row_level_security", postgres: false },
  { name: "PostgreSQL, row_level_security", isolation: "row_level_security", postgres: true },
  { name: "PostgreSQL, schema_per_tenant", isolation: "schema_per_tenant", postgres: true },
] as const;

describe.each(combos)("transaction: statement on $name", (combo) => {
  const run = combo.postgres ? describe.skipIf(!pgUp) : describe;
  run("isolation", () => {
    let h: Harness;
    let db: TestDatabase | undefined;

    beforeAll(async () => {
      if (combo.postgres) db = await createTestDatabase();
      h = await startHarness({
        tenants: [{ id: "acme" }, { id: "globex" }, { id: "org_AbC" }, { id: "org_abc" }],
        tools,
        migrations: [...notesMigrations],
        config: {
          auth: { multi_tenant: { isolation: combo.isolation, default_rate_limit: 1_000_000 } },
          rate_limit: { max_in_flight_per_tenant: 0 },
          audit: { sink: "none" },
          ...(db ? { database: { url: db.runtimeUrl, admin_url: db.adminUrl, pool_size: 3 } } : {}),
        },
      });
    }, 120_000);

    afterAll(async () => {
      await h?.close();
      await db?.drop();
    });

    it("each tenant reads and writes only its own rows, also concurrently on a small pool", async () => {
      const calls = h.tenants.flatMap((t) =>
        Array.from({ length: 15 }, (_, i) =>
          t.client.callTool({ name: "s_add", arguments: { title: `${t.id}#${i}` } }),
        ),
      );
      for (const r of await Promise.all(calls)) expect(r.isError).toBeFalsy();
      const lists = await Promise.all(
        h.tenants.map(async (t) => ({
          id: t.id,
          titles: structured<{ titles: string[] }>(await t.client.callTool({ name: "s_list", arguments: {} }))
            .titles,
        })),
      );
      for (const { id, titles } of lists) {
        expect(titles.length).toBe(15);
        for (const title of titles) expect(title.startsWith(`${id}#`)).toBe(true);
      }
    });

    it("a statement that rebinds the setting changes nothing for the next statement of the call", async () => {
      const acme = h.tenant("acme");
      const r = structured<{ titles: string[]; setting: string }>(
        await acme.client.callTool({ name: "s_rebind", arguments: { other: "globex" } }),
      );
      expect(r.setting).toBe("acme");
      expect(r.titles.every((t) => t.startsWith("acme#"))).toBe(true);
    });

    it("each statement is its own transaction: a failure keeps earlier writes, unlike the per-call default", async () => {
      const globex = h.tenant("globex");
      const kept = await globex.client.callTool({
        name: "s_add_then_fail",
        arguments: { title: "globex#kept" },
      });
      expect(kept.isError).toBe(true);
      const gone = await globex.client.callTool({
        name: "c_add_then_fail",
        arguments: { title: "globex#gone" },
      });
      expect(gone.isError).toBe(true);
      const titles = structured<{ titles: string[] }>(
        await globex.client.callTool({ name: "s_list", arguments: {} }),
      ).titles;
      expect(titles).toContain("globex#kept");
      expect(titles).not.toContain("globex#gone");
      expect(titles).not.toContain("globex#not-json");
      // Nothing reached the other tenants.
      for (const other of ["acme", "org_AbC", "org_abc"]) {
        const seen = structured<{ titles: string[] }>(
          await h.tenant(other).client.callTool({ name: "s_list", arguments: {} }),
        ).titles;
        expect(seen.some((t) => t.startsWith("globex"))).toBe(false);
      }
    });

    it("a failed statement does not poison the next one of the call", async () => {
      const r = structured<{ failed: string; n: number }>(
        await h.tenant("org_AbC").client.callTool({ name: "s_bad_sql", arguments: {} }),
      );
      expect(r.failed).toBe("22012");
      expect(r.n).toBe(15);
    });
  });
});
