import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll } from "vitest";
import { PG_HOST, PG_PORT, PG_SUPER_URL } from "./services.js";

/**
 * A throwaway database shaped like a production deployment: an owner role that runs migrations and
 * a runtime role that can only connect. Neither is superuser or BYPASSRLS, so row-level security
 * tests exercise the policies rather than a role that skips them.
 */
export interface TestDatabase {
  name: string;
  /** Connects as {@link ownerRole}: what `database.admin_url` would be. */
  adminUrl: string;
  /** Connects as {@link runtimeRole}: what `database.url` would be. */
  runtimeUrl: string;
  ownerRole: string;
  runtimeRole: string;
  /** Connects as the superuser to this database, for assertions behind the roles' backs. */
  superUrl: string;
  /** Terminates connections, drops the database and both roles. Safe to call twice. */
  drop(): Promise<void>;
}

function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function urlFor(role: string, database: string): string {
  return `postgres://${role}@${PG_HOST}:${PG_PORT}/${database}`;
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  client.on("error", () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Runs `sql` (one statement or a script) on a connection of its own to `url`: superuser setup in tests. */
export async function runSql(url: string, sql: string): Promise<void> {
  await withClient(url, (client) => client.query(sql));
}

async function dropAll(name: string, ownerRole: string, runtimeRole: string): Promise<void> {
  await withClient(PG_SUPER_URL, async (client) => {
    await client.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
      [name],
    );
    await client.query(`DROP DATABASE IF EXISTS ${ident(name)} WITH (FORCE)`);
    for (const role of [runtimeRole, ownerRole]) {
      const { rowCount } = await client.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [role]);
      if (!rowCount) continue;
      // Whatever the role still owns or was granted in this maintenance database would block DROP ROLE.
      await client.query(`DROP OWNED BY ${ident(role)}`);
      await client.query(`DROP ROLE ${ident(role)}`);
    }
  });
}

/** Creates a fresh database with an owner and a runtime role (trust auth: URLs carry no password). */
export async function createTestDatabase(): Promise<TestDatabase> {
  const suffix = randomBytes(6).toString("hex");
  const name = `tt_db_${suffix}`;
  const ownerRole = `tt_owner_${suffix}`;
  const runtimeRole = `tt_rt_${suffix}`;

  try {
    await withClient(PG_SUPER_URL, async (client) => {
      await client.query(
        `CREATE ROLE ${ident(ownerRole)} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE`,
      );
      await client.query(
        `CREATE ROLE ${ident(runtimeRole)} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT`,
      );
      await client.query(`CREATE DATABASE ${ident(name)} OWNER ${ident(ownerRole)}`);
      await client.query(`REVOKE ALL ON DATABASE ${ident(name)} FROM PUBLIC`);
      await client.query(`GRANT CONNECT ON DATABASE ${ident(name)} TO ${ident(runtimeRole)}`);
    });
    await withClient(urlFor("postgres", name), async (client) => {
      // PostgreSQL < 15 lets everyone create in public; make every version behave like 15+.
      await client.query("REVOKE CREATE ON SCHEMA public FROM PUBLIC");
      await client.query(`ALTER SCHEMA public OWNER TO ${ident(ownerRole)}`);
    });
  } catch (error) {
    await dropAll(name, ownerRole, runtimeRole).catch(() => {});
    throw error;
  }

  let dropped: Promise<void> | undefined;
  return {
    name,
    adminUrl: urlFor(ownerRole, name),
    runtimeUrl: urlFor(runtimeRole, name),
    ownerRole,
    runtimeRole,
    superUrl: urlFor("postgres", name),
    drop() {
      dropped ??= dropAll(name, ownerRole, runtimeRole);
      return dropped;
    },
  };
}

/**
 * Registers `beforeAll`/`afterAll` hooks that create and drop a {@link TestDatabase}; call it in a
 * `describe` body (or at the top of a file) and read the database inside tests.
 *
 * @example
 * describe.skipIf(!pgUp)("rls", () => {
 *   const db = withTestDatabase();
 *   it("…", async () => { const pool = new pg.Pool({ connectionString: db().runtimeUrl }); … });
 * });
 */
export function withTestDatabase(): () => TestDatabase {
  let current: TestDatabase | undefined;
  beforeAll(async () => {
    current = await createTestDatabase();
  });
  afterAll(async () => {
    await current?.drop();
    current = undefined;
  });
  return () => {
    if (!current)
      throw new Error("withTestDatabase(): the database exists only between beforeAll and afterAll");
    return current;
  };
}
