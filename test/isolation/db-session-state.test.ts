import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { ensurePgliteRuntimeRole, runCoreMigrations } from "../../src/db/core-migrations.js";
import type { Databases } from "../../src/db/database.js";
import { openDatabases } from "../../src/db/open.js";
import { DataIsolation } from "../../src/isolation/data-isolation.js";
import type { IsolationName } from "../../src/isolation/strategy.js";
import type { TenantRecord } from "../../src/tenancy/tenant.js";
import { demoMigrations } from "../../src/tools/demo/index.js";
import type { TenantDb } from "../../src/tools/tool-context.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { record } from "../support/records.js";
import { serviceGate } from "../support/services.js";

/**
 * Session state a tool's SQL creates outlives its transaction unless Tenantry resets it: a WITH
 * HOLD cursor or a temporary table keeps rows, a session-level setting keeps a value. On a pooled
 * connection (or PGlite's single one) the next call may be another tenant's: with the same
 * (buggy, not hostile) tool, it would read the first tenant's rows. Every call's session state
 * must end with the call, in both transaction modes.
 */

const pgUp = await serviceGate("postgres");

type Mode = "call" | "statement";

interface Setup {
  dbs: Databases;
  isolation: DataIsolation;
  a: TenantRecord;
  b: TenantRecord;
}

async function setup(strategy: IsolationName, db: TestDatabase | undefined): Promise<Setup> {
  // One connection: the second tenant's call lands where the first one's ran.
  const config = parseConfig(
    db ? { database: { url: db.runtimeUrl, admin_url: db.adminUrl, pool_size: 1 } } : {},
    "test",
    {},
  );
  const dbs = await openDatabases(config, { memory: true });
  if (dbs.runtimeRole) await ensurePgliteRuntimeRole(dbs.admin, dbs.runtimeRole);
  await runCoreMigrations(dbs.admin, dbs.runtimeRoleName);
  const isolation = new DataIsolation(dbs, strategy);
  isolation.add(demoMigrations);
  await isolation.migrateShared();
  const a = record("org_A", "ka");
  const b = record("org_B", "kb");
  for (const t of [a, b]) await isolation.provisionTenant(t);
  await isolation.checkSafety();
  return { dbs, isolation, a, b };
}

async function asTool<T>(
  s: Setup,
  t: TenantRecord,
  mode: Mode,
  fn: (db: TenantDb) => Promise<T>,
): Promise<T> {
  const db = mode === "statement" ? s.isolation.openStatements(t) : s.isolation.open(t);
  try {
    const value = await fn(db);
    await db.finish(true);
    return value;
  } catch (error) {
    await db.finish(false);
    throw error;
  }
}

/** What the second tenant's call finds of the first one's leftovers, or the error it gets. */
async function leftover(p: Promise<{ rows: unknown[] }>): Promise<unknown> {
  try {
    return (await p).rows;
  } catch (error) {
    return (error as { code?: string }).code;
  }
}

const combos = [
  { name: "PGlite, row_level_security", strategy: "row_level_security", postgres: false },
  { name: "PostgreSQL, row_level_security", strategy: "row_level_security", postgres: true },
  { name: "PostgreSQL, schema_per_tenant", strategy: "schema_per_tenant", postgres: true },
] as const;

describe.each(combos)("session state ends with the tool call: $name", (combo) => {
  const run = combo.postgres ? describe.skipIf(!pgUp) : describe;
  run.each(["call", "statement"] as const)("transaction: %s", (mode) => {
    let db: TestDatabase | undefined;
    let s: Setup;
    beforeAll(async () => {
      if (combo.postgres) {
        db = await createTestDatabase();
        // PostgreSQL grants TEMPORARY on a new database to PUBLIC; the test database revokes it.
        const su = new pg.Client({ connectionString: db.superUrl });
        await su.connect();
        await su.query(`GRANT TEMPORARY ON DATABASE "${db.name}" TO PUBLIC`);
        await su.end();
      }
      s = await setup(combo.strategy, db);
      await asTool(s, s.a, "call", (q) =>
        q.query("INSERT INTO notes (title, body) VALUES ('a secret', 'x')"),
      );
    });
    afterAll(async () => {
      await s?.dbs.close();
      await db?.drop();
    });

    it("a WITH HOLD cursor is not left for the next tenant", async () => {
      await asTool(s, s.a, mode, (q) => q.query("DECLARE page CURSOR WITH HOLD FOR SELECT title FROM notes"));
      const seen = await leftover(asTool(s, s.b, mode, (q) => q.query("FETCH ALL FROM page")));
      expect(seen).toBe("34000"); // invalid_cursor_name: there is no such cursor
    });

    it("a temporary table is not left for the next tenant", async () => {
      await asTool(s, s.a, mode, (q) => q.query("CREATE TEMP TABLE scratch AS SELECT title FROM notes"));
      const seen = await leftover(asTool(s, s.b, mode, (q) => q.query("SELECT title FROM scratch")));
      expect(seen).toBe("42P01"); // undefined_table
    });

    it("a session-level setting is not left for the next tenant", async () => {
      await asTool(s, s.a, mode, (q) => q.query("SELECT set_config('app.last_title', 'a secret', false)"));
      const seen = await leftover(
        asTool(s, s.b, mode, (q) => q.query("SELECT current_setting('app.last_title', true) AS v")),
      );
      expect(seen).toEqual([{ v: "" }]);
    });
  });
});
