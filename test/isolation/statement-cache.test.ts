import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { type Harness, startHarness } from "../../src/testing/harness.js";
import { defineTool } from "../../src/tools/define-tool.js";
import { notesMigrations } from "../../src/tools/demo/notes.js";
import { createTestDatabase, runSql, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";
import { structured } from "../support/tool-results.js";

/**
 * Under row_level_security, a `transaction: "statement"` tool's statements are kept prepared on
 * their connection (`[database] statement_cache_size`), and bound for every tenant whose call
 * lands there. The plan must never carry one tenant's rows to another, a table change must not
 * fail calls, and tool SQL must not be able to plant a statement under the cache's names.
 */

const pgUp = await serviceGate("postgres");
const statement = "statement" as const;

const LIST = "SELECT title FROM notes ORDER BY title";
const STAR = "SELECT * FROM notes ORDER BY title";
const tools = [
  defineTool({
    name: "add",
    description: "insert a note",
    input: z.object({ title: z.string() }),
    transaction: statement,
    async run(input, ctx) {
      await ctx.db.query("INSERT INTO notes (title, body) VALUES ($1, '')", [input.title]);
      return { ok: true };
    },
  }),
  defineTool({
    name: "list",
    description: "note titles",
    input: z.object({}),
    transaction: statement,
    async run(_input, ctx) {
      const { rows } = await ctx.db.query<{ title: string }>(LIST);
      return { titles: rows.map((r) => r.title) };
    },
  }),
  defineTool({
    name: "star",
    description: "whole rows",
    input: z.object({}),
    transaction: statement,
    async run(_input, ctx) {
      const { rows } = await ctx.db.query(STAR);
      return { rows: rows.map(({ title, extra }) => ({ title, extra })) };
    },
  }),
  defineTool({
    name: "prepared",
    description: "the statements Tenantry keeps prepared on this connection",
    input: z.object({}),
    transaction: statement,
    async run(_input, ctx) {
      const { rows } = await ctx.db.query<{ statement: string }>(
        "SELECT statement FROM pg_prepared_statements WHERE name LIKE 'tenantry\\_s%' ORDER BY prepare_time",
      );
      return { statements: rows.map((r) => r.statement) };
    },
  }),
  defineTool({
    name: "plant",
    description: "replaces each statement the cache holds here with one answering a planted row",
    input: z.object({}),
    transaction: statement,
    async run(_input, ctx) {
      await ctx.db.query(`DO $$ DECLARE n text; BEGIN
        FOR n IN SELECT name FROM pg_prepared_statements
                  WHERE name LIKE 'tenantry\\_s%' AND statement NOT LIKE 'DO %' LOOP
          EXECUTE format('DEALLOCATE %I', n);
          EXECUTE format('PREPARE %I AS SELECT %L::text AS title', n, 'planted');
        END LOOP;
      END $$`);
      return { ok: true };
    },
  }),
];

const setups = [
  { name: "row_level_security, cache of 2", isolation: "row_level_security", size: 2, cached: true },
  { name: "row_level_security, cache off", isolation: "row_level_security", size: 0, cached: false },
  { name: "schema_per_tenant", isolation: "schema_per_tenant", size: 2, cached: false },
] as const;

describe.skipIf(!pgUp).each(setups)("statement cache: $name", (setup) => {
  let h: Harness;
  let db: TestDatabase;
  const call = async <T>(tenant: string, name: string, args: Record<string, unknown> = {}) =>
    structured<T>(await h.tenant(tenant).client.callTool({ name, arguments: args }));
  const titles = async (tenant: string) => (await call<{ titles: string[] }>(tenant, "list")).titles;
  const prepared = async (tenant: string) =>
    (await call<{ statements: string[] }>(tenant, "prepared")).statements;

  beforeAll(async () => {
    db = await createTestDatabase();
    h = await startHarness({
      tenants: [{ id: "acme" }, { id: "globex" }],
      tools,
      migrations: [...notesMigrations],
      config: {
        auth: { multi_tenant: { isolation: setup.isolation, default_rate_limit: 1_000_000 } },
        rate_limit: { max_in_flight_per_tenant: 0 },
        audit: { sink: "none" },
        // One runtime connection: every call below lands on the same one, whoever makes it.
        database: {
          url: db.runtimeUrl,
          admin_url: db.adminUrl,
          pool_size: 1,
          statement_cache_size: setup.size,
        },
      },
    });
    await call("acme", "add", { title: "acme#1" });
    await call("globex", "add", { title: "globex#1" });
  }, 120_000);

  afterAll(async () => {
    await h?.close();
    await db?.drop();
  });

  it("tenants taking turns on one connection each read only their own rows", async () => {
    for (let round = 0; round < 3; round++) {
      expect(await titles("acme")).toEqual(["acme#1"]);
      expect(await titles("globex")).toEqual(["globex#1"]);
    }
    const kept = await prepared("acme");
    if (setup.cached) expect(kept).toContain(LIST);
    else expect(kept).toEqual([]);
  });

  it("keeps at most statement_cache_size statements, evicting the least recently used", async () => {
    await titles("acme");
    await call("globex", "star");
    await call("acme", "add", { title: "acme#2" });
    const kept = await prepared("globex");
    // The listing's own statement is prepared before it runs, and evicts the oldest.
    if (setup.cached) {
      expect(kept).toHaveLength(2);
      expect(kept).toContain("INSERT INTO notes (title, body) VALUES ($1, '')");
      expect(kept).not.toContain(LIST);
    } else expect(kept).toEqual([]);
    expect(await titles("acme")).toEqual(["acme#1", "acme#2"]);
    expect(await titles("globex")).toEqual(["globex#1"]);
  });

  it("a table changed under a prepared SELECT *: the call succeeds and sees the new column", async () => {
    for (let i = 0; i < 2; i++)
      expect((await call<{ rows: unknown[] }>("acme", "star")).rows).toHaveLength(2);
    // Every `notes` table: the shared one, or each tenant schema's.
    await runSql(
      db.adminUrl,
      `DO $$ DECLARE s text; BEGIN
         FOR s IN SELECT schemaname FROM pg_tables WHERE tablename = 'notes' LOOP
           EXECUTE format('ALTER TABLE %I.notes ADD COLUMN extra int NOT NULL DEFAULT 7', s);
         END LOOP;
       END $$`,
    );
    expect(await call("acme", "star")).toEqual({
      rows: [
        { title: "acme#1", extra: 7 },
        { title: "acme#2", extra: 7 },
      ],
    });
    expect(await call("globex", "star")).toEqual({ rows: [{ title: "globex#1", extra: 7 }] });
  });

  it("tool SQL that replaces the cache's statements costs its connection, and plants nothing", async () => {
    expect(await titles("globex")).toEqual(["globex#1"]); // LIST is now among the cached statements
    await call("acme", "plant");
    for (let round = 0; round < 3; round++) {
      expect(await titles("globex")).toEqual(["globex#1"]);
      expect(await titles("acme")).toEqual(["acme#1", "acme#2"]);
    }
  });
});
