import pg from "pg";
import { describe, expect, it } from "vitest";
import { createTestDatabase } from "../support/postgres.js";
import { PG_SUPER_URL, serviceGate } from "../support/services.js";

const pgUp = await serviceGate("postgres");

async function query<R extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

async function sqlState(url: string, sql: string): Promise<string | undefined> {
  try {
    await query(url, sql);
    return undefined;
  } catch (error) {
    return (error as { code?: string }).code;
  }
}

describe.skipIf(!pgUp)("createTestDatabase", () => {
  it("gives roles that cannot bypass row-level security, and drops everything", async () => {
    const db = await createTestDatabase();
    try {
      expect(db.name).toMatch(/^tt_db_[0-9a-f]+$/);
      expect(db.runtimeUrl).toBe(`postgres://${db.runtimeRole}@127.0.0.1:5432/${db.name}`);

      const roles = await query<{
        rolname: string;
        rolsuper: boolean;
        rolbypassrls: boolean;
        rolinherit: boolean;
      }>(
        db.superUrl,
        "SELECT rolname, rolsuper, rolbypassrls, rolinherit FROM pg_roles WHERE rolname = ANY($1) ORDER BY rolname",
        [[db.ownerRole, db.runtimeRole]],
      );
      expect(roles).toHaveLength(2);
      for (const role of roles) {
        expect(role).toMatchObject({ rolsuper: false, rolbypassrls: false });
      }
      expect(roles.find((r) => r.rolname === db.runtimeRole)?.rolinherit).toBe(false);

      const [who] = await query<{ user: string; db: string }>(
        db.runtimeUrl,
        "SELECT current_user AS user, current_database() AS db",
      );
      expect(who).toEqual({ user: db.runtimeRole, db: db.name });

      // 42501 insufficient_privilege: the runtime role can connect and nothing more.
      expect(await sqlState(db.runtimeUrl, "CREATE TABLE public.t (id int)")).toBe("42501");
      expect(await sqlState(db.runtimeUrl, "CREATE SCHEMA s")).toBe("42501");
      // The owner runs migrations, so it can.
      expect(await sqlState(db.adminUrl, "CREATE TABLE public.t (id int)")).toBeUndefined();
      expect(await sqlState(db.adminUrl, "CREATE SCHEMA s")).toBeUndefined();
      const [owner] = await query<{ owner: string }>(
        db.superUrl,
        "SELECT tableowner AS owner FROM pg_tables WHERE schemaname = 'public' AND tablename = 't'",
      );
      expect(owner?.owner).toBe(db.ownerRole);

      // No one else may connect.
      const [priv] = await query<{ can: boolean }>(
        PG_SUPER_URL,
        "SELECT has_database_privilege('public', $1, 'CONNECT') AS can",
        [db.name],
      );
      expect(priv?.can).toBe(false);
    } finally {
      await db.drop();
    }

    const left = await query<{ n: number }>(
      PG_SUPER_URL,
      `SELECT (SELECT count(*) FROM pg_database WHERE datname = $1)::int
            + (SELECT count(*) FROM pg_roles WHERE rolname = ANY($2))::int AS n`,
      [db.name, [db.ownerRole, db.runtimeRole]],
    );
    expect(left[0]?.n).toBe(0);
    await expect(db.drop()).resolves.toBeUndefined();
  });

  it("drops a database that still has open connections", async () => {
    const db = await createTestDatabase();
    const client = new pg.Client({ connectionString: db.runtimeUrl });
    client.on("error", () => {});
    await client.connect();
    await db.drop();
    const [row] = await query<{ n: number }>(
      PG_SUPER_URL,
      "SELECT count(*)::int AS n FROM pg_database WHERE datname = $1",
      [db.name],
    );
    expect(row?.n).toBe(0);
    await client.end().catch(() => {});
  });
});
