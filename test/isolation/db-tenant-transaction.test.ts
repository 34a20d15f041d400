import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DataIsolation } from "../../src/isolation/data-isolation.js";
import { schemaNameForKey } from "../../src/isolation/names.js";
import type { IsolationName } from "../../src/isolation/strategy.js";
import type { TenantRecord } from "../../src/tenancy/tenant.js";
import { type IsolationSetup, setupIsolation } from "../support/isolation.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { record } from "../support/records.js";
import { serviceGate } from "../support/services.js";

/**
 * `ctx.db` (TenantTransaction) against real databases: one transaction on one connection, bound
 * to the tenant before the tool's first statement, committed or rolled back as a whole; and the
 * fail-closed default when no tenant is bound.
 */

const pgUp = await serviceGate("postgres");

type Setup = IsolationSetup;
const setup = setupIsolation;

/** Runs `fn` as one tool call would: `finish(true)` on success, `finish(false)` on error. */
async function asTool<T>(
  isolation: DataIsolation,
  t: TenantRecord,
  fn: (db: ReturnType<DataIsolation["open"]>) => Promise<T>,
): Promise<T> {
  const db = isolation.open(t);
  try {
    const value = await fn(db);
    await db.finish(true);
    return value;
  } catch (error) {
    await db.finish(false).catch(() => {});
    throw error;
  }
}

async function sqlState(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (error) {
    return (error as { code?: string }).code;
  }
}

describe("PGlite: tenant transactions switch to the runtime role", () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup("row_level_security", undefined);
  });
  afterAll(async () => s?.close());

  it("runs the tool's statements as tenantry_runtime (not superuser), and only inside the call", async () => {
    const [a] = s.tenants;
    const who = await asTool(s.isolation, a!, async (db) => {
      const r = await db.query<{ cu: string; su: string; sup: boolean; tid: string }>(
        `SELECT current_user AS cu, session_user AS su, current_setting('app.tenant_id') AS tid,
                (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS sup`,
      );
      return r.rows[0]!;
    });
    expect(who).toEqual({ cu: "tenantry_runtime", su: "postgres", sup: false, tid: "org_T0" });
    // After COMMIT the connection is the owner again, with no tenant bound.
    const after = await s.dbs.admin.query<{ cu: string; tid: string | null }>(
      "SELECT current_user AS cu, current_setting('app.tenant_id', true) AS tid",
    );
    expect(after.rows[0]?.cu).toBe("postgres");
    expect(after.rows[0]?.tid ?? "").toBe("");
  });

  it("is subject to forced RLS: a row for another tenant is refused, and reads see only own rows", async () => {
    const [a, b] = s.tenants;
    await asTool(s.isolation, a!, (db) =>
      db.query("INSERT INTO notes (title, body) VALUES ($1, $2)", ["from a", "x"]),
    );
    await asTool(s.isolation, b!, (db) =>
      db.query("INSERT INTO notes (title, body) VALUES ($1, $2)", ["from b", "x"]),
    );
    const seen = await asTool(s.isolation, a!, (db) =>
      db.query<{ title: string }>("SELECT title FROM notes"),
    );
    expect(seen.rows.map((r) => r.title)).toEqual(["from a"]);
    const forged = await sqlState(
      asTool(s.isolation, a!, (db) =>
        db.query("INSERT INTO notes (tenant_id, title, body) VALUES ($1, 'forged', 'x')", [b!.id]),
      ),
    );
    expect(forged).toBe("42501");
  });
});

const strategies: IsolationName[] = ["row_level_security", "schema_per_tenant"];

describe.skipIf(!pgUp).each(strategies)("PostgreSQL, %s: TenantTransaction", (strategy) => {
  let db: TestDatabase;
  let s: Setup;
  beforeAll(async () => {
    db = await createTestDatabase();
    s = await setup(strategy, db, { tenants: 20, poolSize: 10 });
  });
  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });

  it("keeps 400 calls of 20 tenants, 50 at a time, on a pool of 10 bound to their own tenant", async () => {
    const pids = new Set<number>();
    const wrong: string[] = [];
    const calls = Array.from({ length: 400 }, (_, i) => () => {
      const t = s.tenants[i % s.tenants.length]!;
      return asTool(s.isolation, t, async (tx) => {
        const first = await tx.query<{ tid: string; pid: number }>(
          "SELECT current_setting('app.tenant_id') AS tid, pg_backend_pid() AS pid",
        );
        pids.add(first.rows[0]!.pid);
        if (first.rows[0]!.tid !== t.id) wrong.push(`${t.id} bound to ${first.rows[0]!.tid}`);
        // Let the others run in between, so connections are shared over time.
        await tx.query("SELECT pg_sleep($1)", [(i % 7) / 1000]);
        await tx.query("INSERT INTO notes (title, body) VALUES ($1, $2)", [`${t.id}#${i}`, "x"]);
        const seen = await tx.query<{ title: string; pid: number }>(
          "SELECT title, pg_backend_pid() AS pid FROM notes",
        );
        for (const r of seen.rows) {
          if (!r.title.startsWith(`${t.id}#`)) wrong.push(`${t.id} saw ${r.title}`);
          if (r.pid !== first.rows[0]!.pid) wrong.push(`${t.id} changed connection`);
        }
      });
    });
    // 50 in flight, as a server would have: more callers than connections, none left dangling.
    const failures: unknown[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        while (next < calls.length) await calls[next++]!().catch((e: unknown) => failures.push(e));
      }),
    );
    expect(failures).toEqual([]);
    expect(wrong).toEqual([]);
    expect(pids.size).toBeGreaterThan(1);
    expect(pids.size).toBeLessThanOrEqual(10);
    for (const t of s.tenants) {
      const n = await asTool(s.isolation, t, (tx) =>
        tx.query<{ n: number }>("SELECT count(*)::int AS n FROM notes"),
      );
      expect(n.rows[0]?.n).toBe(20);
    }
  });

  it("commits on success and rolls everything back on error", async () => {
    const t = s.tenants[0]!;
    const count = async () =>
      (await asTool(s.isolation, t, (tx) => tx.query<{ n: number }>("SELECT count(*)::int AS n FROM notes")))
        .rows[0]!.n;
    const before = await count();
    await expect(
      asTool(s.isolation, t, async (tx) => {
        await tx.query("INSERT INTO notes (title, body) VALUES ('kept?', 'x')");
        throw new Error("tool failed after writing");
      }),
    ).rejects.toThrow("tool failed after writing");
    expect(await count()).toBe(before);

    // A tool that swallows a failed statement and returns ok: COMMIT would silently roll back on
    // PostgreSQL; finish(true) reports it instead (25P02), as PGlite does.
    const tx = s.isolation.open(t);
    await tx.query("INSERT INTO notes (title, body) VALUES ('lost', 'x')");
    await expect(tx.query("INSERT INTO notes (title, body) VALUES ('', 'x')")).rejects.toMatchObject({
      code: "23514",
    });
    await expect(tx.finish(true)).rejects.toMatchObject({ code: "25P02" });
    expect(await count()).toBe(before);

    await asTool(s.isolation, t, (q) => q.query("INSERT INTO notes (title, body) VALUES ('kept', 'x')"));
    expect(await count()).toBe(before + 1);
  });

  it("refuses statements after the call ended, and opens nothing for a tool that never queries", async () => {
    const t = s.tenants[1]!;
    const idle = s.isolation.open(t);
    await idle.finish(true);
    await expect(idle.query("SELECT 1")).rejects.toMatchObject({ code: "internal" });
    const used = s.isolation.open(t);
    await used.query("SELECT 1");
    await used.finish(true);
    await expect(used.query("SELECT 1")).rejects.toMatchObject({ code: "internal" });
  });

  it("never binds an invalid tenant id", () => {
    expect(() => s.isolation.open(record("a/b", "k0"))).toThrow(
      expect.objectContaining({ code: "invalid_tenant_id" }),
    );
    expect(() => s.isolation.open(record("x'; DROP TABLE notes; --", "k0"))).toThrow(
      expect.objectContaining({ code: "invalid_tenant_id" }),
    );
  });

  it("gives tool code no way to reach another tenant's rows", async () => {
    const [a, b] = s.tenants;
    await asTool(s.isolation, b!, (tx) =>
      tx.query("INSERT INTO notes (title, body) VALUES ('b secret', 'x')"),
    );
    if (strategy === "row_level_security") {
      const forged = await sqlState(
        asTool(s.isolation, a!, (tx) =>
          tx.query("INSERT INTO notes (tenant_id, title, body) VALUES ($1, 'forged', 'x')", [b!.id]),
        ),
      );
      expect(forged).toBe("42501");
      // Moving its own rows to the other tenant fails WITH CHECK.
      await asTool(s.isolation, a!, (tx) =>
        tx.query("INSERT INTO notes (title, body) VALUES ('a row', 'x')"),
      );
      const moved = await sqlState(
        asTool(s.isolation, a!, (tx) => tx.query("UPDATE notes SET tenant_id = $1", [b!.id])),
      );
      expect(moved).toBe("42501");
    } else {
      // Naming the other tenant's schema: privileges allow it, the schema's own policy does not.
      const other = `${schemaNameForKey(b!.key)}.notes`;
      const seen = await asTool(s.isolation, a!, (tx) => tx.query(`SELECT * FROM ${other}`));
      expect(seen.rows).toEqual([]);
      const wrote = await sqlState(
        asTool(s.isolation, a!, (tx) =>
          tx.query(`INSERT INTO ${other} (title, body) VALUES ('forged', 'x')`),
        ),
      );
      expect(wrote).toBe("42501");
      const wiped = await asTool(s.isolation, a!, (tx) => tx.query(`DELETE FROM ${other}`));
      expect(wiped.rowCount).toBe(0);
    }
    const bRows = await asTool(s.isolation, b!, (tx) =>
      tx.query<{ title: string }>("SELECT title FROM notes"),
    );
    expect(bRows.rows.map((r) => r.title)).toContain("b secret");
    expect(bRows.rows.map((r) => r.title)).not.toContain("forged");
  });

  it("without a tenant setting, the runtime role sees zero rows and cannot insert", async () => {
    const client = new pg.Client({ connectionString: db.runtimeUrl });
    await client.connect();
    try {
      const who = await client.query<{ u: string }>("SELECT current_user AS u");
      expect(who.rows[0]?.u).toBe(db.runtimeRole);
      const tables =
        strategy === "row_level_security"
          ? ["notes"]
          : s.tenants.slice(0, 3).map((t) => `${schemaNameForKey(t.key)}.notes`);
      for (const table of tables) {
        // Unset, then set to the empty string: both must fail closed.
        for (const setting of [null, ""]) {
          await client.query("BEGIN");
          if (setting !== null) await client.query("SELECT set_config('app.tenant_id', $1, true)", [setting]);
          expect((await client.query(`SELECT * FROM ${table}`)).rowCount).toBe(0);
          expect((await client.query(`UPDATE ${table} SET body = 'x'`)).rowCount).toBe(0);
          expect((await client.query(`DELETE FROM ${table}`)).rowCount).toBe(0);
          // The policy's WITH CHECK refuses (42501); under RLS, tenant_id would default to NULL (23502) too.
          const refused = await sqlState(
            client.query(`INSERT INTO ${table} (title, body) VALUES ('x', 'y')`),
          );
          expect(["42501", "23502"]).toContain(refused);
          await client.query("ROLLBACK");
        }
      }
      if (strategy === "row_level_security") {
        await expect(
          client.query("INSERT INTO notes (tenant_id, title, body) VALUES ('org_T0', 'x', 'y')"),
        ).rejects.toMatchObject({ code: "42501" });
      }
    } finally {
      await client.end();
    }
    // The rows are there: the runtime role just may not see them without a tenant.
    const su = new pg.Client({ connectionString: db.superUrl });
    await su.connect();
    try {
      const table =
        strategy === "row_level_security" ? "notes" : `${schemaNameForKey(s.tenants[0]!.key)}.notes`;
      const r = await su.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
      expect(r.rows[0]!.n).toBeGreaterThan(0);
    } finally {
      await su.end();
    }
  });
});

describe.skipIf(!pgUp)("database.pool_size", () => {
  let db: TestDatabase;
  let s: Setup;
  beforeAll(async () => {
    db = await createTestDatabase();
    s = await setup("row_level_security", db, { tenants: 3, poolSize: 3 });
  });
  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });

  it("bounds the runtime connections: 12 concurrent calls share 3 connections", async () => {
    let inFlight = 0;
    let most = 0;
    const pids = new Set<number>();
    await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        asTool(s.isolation, s.tenants[i % 3]!, async (tx) => {
          const r = await tx.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
          inFlight++;
          most = Math.max(most, inFlight);
          pids.add(r.rows[0]!.pid);
          await tx.query("SELECT pg_sleep(0.05)");
          inFlight--;
        }),
      ),
    );
    expect(most).toBe(3);
    expect(pids.size).toBe(3);
  });
});
