import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { whoami } from "../../src/tools/demo/whoami.js";
import { mcp } from "../admin/helpers.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";

const pgUp = await serviceGate("postgres");

/** Runs `fn` on one connection as `url`'s role; returns the SQLSTATE of a failure, or the rows. */
async function asRole<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  c.on("error", () => {});
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

async function sqlState(c: pg.Client, sql: string, params: unknown[] = []): Promise<string | undefined> {
  await c.query("SAVEPOINT s");
  try {
    await c.query(sql, params);
    await c.query("RELEASE SAVEPOINT s");
    return undefined;
  } catch (error) {
    await c.query("ROLLBACK TO SAVEPOINT s");
    return (error as { code?: string }).code;
  }
}

describe.skipIf(!pgUp)("tenantry_audit on PostgreSQL", () => {
  let db: TestDatabase;
  let h: Harness;
  beforeAll(async () => {
    db = await createTestDatabase();
    h = await startHarness({
      tenants: 2,
      tools: [whoami],
      config: { database: { url: db.runtimeUrl, admin_url: db.adminUrl } },
    });
    for (const t of h.tenants) {
      for (let i = 0; i < 3; i++) await mcp(h, t.token, "tools/call", { name: "whoami", arguments: {} });
    }
    await h.app.audit.flush();
  }, 120_000);
  afterAll(async () => {
    await h?.close();
    await db?.drop();
  });

  it("the owner reads every tenant's events", async () => {
    const events = await h.app.adminServices.auditLog.query({ action: "tools/call", limit: 1000 });
    const tenants = new Set(events.map((e) => e.tenantId));
    expect(tenants).toEqual(new Set(["tenant-0", "tenant-1"]));
    const admin = await h.app.adminServices.auditLog.query({ tenant: "tenant-0", action: "tenant.create" });
    expect(admin).toHaveLength(1);
    expect(admin[0]).toMatchObject({ kind: "admin", userId: "harness", outcome: "ok" });
  });

  it("the runtime role appends its own tenant's events, reads only those, and changes nothing", async () => {
    await asRole(db.runtimeUrl, async (c) => {
      // Outside a tenant transaction: nothing is visible, nothing can be written.
      expect((await c.query("SELECT count(*)::int AS n FROM tenantry_audit")).rows[0].n).toBe(0);
      await c.query("BEGIN");
      expect(
        await sqlState(c, "INSERT INTO tenantry_audit (kind, action, outcome) VALUES ('request', 'x', 'ok')"),
      ).toBe("42501");
      await c.query("SELECT set_config('app.tenant_id', 'tenant-0', true)");
      const own = await c.query<{ tenant_id: string }>("SELECT tenant_id FROM tenantry_audit");
      expect(own.rows.length).toBeGreaterThan(0);
      expect(new Set(own.rows.map((r) => r.tenant_id))).toEqual(new Set(["tenant-0"]));
      expect(
        await sqlState(
          c,
          "INSERT INTO tenantry_audit (kind, tenant_id, action, outcome) VALUES ('request', 'tenant-0', 'x', 'ok')",
        ),
      ).toBeUndefined();
      // Forging another tenant's event, or an event of no tenant, is refused.
      expect(
        await sqlState(
          c,
          "INSERT INTO tenantry_audit (kind, tenant_id, action, outcome) VALUES ('request', 'tenant-1', 'x', 'ok')",
        ),
      ).toBe("42501");
      expect(
        await sqlState(c, "INSERT INTO tenantry_audit (kind, action, outcome) VALUES ('admin', 'x', 'ok')"),
      ).toBe("42501");
      for (const sql of [
        "UPDATE tenantry_audit SET action = 'y'",
        "DELETE FROM tenantry_audit",
        "TRUNCATE tenantry_audit",
        "SELECT * FROM tenantry_impersonations",
        "SELECT * FROM tenantry_tenants",
      ]) {
        expect(await sqlState(c, sql), sql).toBe("42501");
      }
      await c.query("ROLLBACK");
    });
  });
});
