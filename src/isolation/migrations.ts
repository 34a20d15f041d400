import type { Database, TransactionHandle } from "../db/database.js";
import { TenantryError } from "../errors.js";
import type { TenantRecord } from "../tenancy/tenant.js";
import { assertTenantId } from "../tenancy/tenant-id.js";
import { quoteIdent, schemaNameForKey } from "./names.js";
import { CURRENT_TENANT_SQL, TENANT_ONCE_SQL } from "./strategy.js";

/** An application migration: tables holding tenant data, written with unqualified names. */
export interface AppMigration {
  /** Positive integer, unique across the app's migrations; applied in ascending order, once. */
  readonly version: number;
  readonly name: string;
  /**
   * DDL for the app's tables, without transaction control (it runs inside one). Under RLS it runs
   * once with `search_path` = `public`; under schema_per_tenant once in each tenant schema.
   */
  readonly sql: string;
  /**
   * Tables that hold tenant rows, as lower-case unquoted names. Under RLS each gets `tenant_id`
   * (defaulted from the transaction's tenant), an index leading with it, forced RLS and a policy.
   * Under schema_per_tenant every table of the schema is secured whether listed or not.
   */
  readonly tenantTables: readonly string[];
}

/** The policy Tenantry creates on every tenant table. */
export const TENANT_POLICY = "tenantry_tenant_isolation";

/** Where `migrations.ts` records app migrations applied to the shared tables (RLS). */
export const SHARED_SCOPE = "app";

/** The `tenantry_migrations` scope of one tenant schema. */
export function schemaScope(schema: string): string {
  return `schema:${schema}`;
}

const TABLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;
const LOCK_SHARED = "tenantry_app_migrations";

/**
 * Checks a set of app migrations and returns them sorted by version. Throws `invalid_argument`
 * on a duplicate or non-positive version, an empty script, or a table name that is not a plain
 * lower-case identifier (what PostgreSQL makes of an unquoted name, so the app's `CREATE TABLE
 * notes` and our `"notes"` are the same table).
 */
export function validateMigrations(migrations: readonly AppMigration[]): AppMigration[] {
  const seen = new Set<number>();
  for (const m of migrations) {
    if (!Number.isSafeInteger(m.version) || m.version <= 0) {
      throw new TenantryError(
        "invalid_argument",
        `app migration version ${m.version} is not a positive integer`,
      );
    }
    if (seen.has(m.version)) {
      throw new TenantryError("invalid_argument", `app migration version ${m.version} is registered twice`);
    }
    seen.add(m.version);
    if (typeof m.name !== "string" || m.name.length === 0 || m.name.length > 200) {
      throw new TenantryError(
        "invalid_argument",
        `app migration ${m.version}: name must be 1-200 characters`,
      );
    }
    if (typeof m.sql !== "string" || m.sql.trim() === "") {
      throw new TenantryError("invalid_argument", `app migration ${m.version}: sql is empty`);
    }
    for (const t of m.tenantTables) {
      if (typeof t !== "string" || !TABLE_NAME.test(t)) {
        throw new TenantryError(
          "invalid_argument",
          `app migration ${m.version}: tenant table ${JSON.stringify(t)} must be a lower-case unquoted identifier`,
        );
      }
    }
  }
  return [...migrations].sort((a, b) => a.version - b.version);
}

/** `'…'` with quotes doubled. Only for values already validated (tenant ids); never for input. */
function quoteLiteral(value: string): string {
  if (value.includes("\0")) throw new TenantryError("invalid_argument", "NUL in an SQL literal");
  return `'${value.replaceAll("'", "''")}'`;
}

function failed(what: string, error: unknown): TenantryError {
  if (error instanceof TenantryError && error.code === "migration_failed") return error;
  const reason = error instanceof Error ? error.message : String(error);
  return new TenantryError("migration_failed", `${what}: ${reason}`, { cause: error });
}

interface TableState {
  oid: number;
  rls: boolean;
  forced: boolean;
}

async function tableState(
  tx: TransactionHandle,
  schema: string,
  table: string,
): Promise<TableState | undefined> {
  const r = await tx.query<{ oid: number; rls: boolean; forced: boolean }>(
    `SELECT c.oid::int AS oid, c.relrowsecurity AS rls, c.relforcerowsecurity AS forced
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`,
    [schema, table],
  );
  return r.rows[0];
}

/** Adds (or repairs) `tenant_id text NOT NULL DEFAULT <current tenant>` and an index leading with it. */
async function ensureTenantColumn(tx: TransactionHandle, rel: string, state: TableState): Promise<void> {
  const col = await tx.query<{ type: string; notnull: boolean; def: string | null }>(
    `SELECT format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS notnull,
            pg_get_expr(d.adbin, d.adrelid) AS def
       FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = $1 AND a.attname = 'tenant_id' AND NOT a.attisdropped`,
    [state.oid],
  );
  const existing = col.rows[0];
  if (!existing) {
    // On a table that already has rows this fails (the default is NULL outside a tenant
    // transaction): Tenantry cannot guess whose rows they are, and says so.
    await tx.query(`ALTER TABLE ${rel} ADD COLUMN tenant_id text NOT NULL DEFAULT ${CURRENT_TENANT_SQL}`);
  } else if (existing.type !== "text") {
    throw new TenantryError(
      "migration_failed",
      `${rel}.tenant_id is ${existing.type}; tenant ids are text (case-sensitive IdP values)`,
    );
  } else if (!existing.notnull || !existing.def?.includes("current_setting('app.tenant_id'")) {
    await tx.query(
      `ALTER TABLE ${rel} ALTER COLUMN tenant_id SET DEFAULT ${CURRENT_TENANT_SQL}, ALTER COLUMN tenant_id SET NOT NULL`,
    );
  }
  const indexed = await tx.query(
    `SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
      WHERE i.indrelid = $1 AND a.attname = 'tenant_id'`,
    [state.oid],
  );
  if (indexed.rowCount === 0) await tx.query(`CREATE INDEX ON ${rel} (tenant_id)`);
}

/**
 * Makes one table a tenant table: RLS enabled and FORCED (so the owner is subject to it too), the
 * Tenantry policy (re)created with the same USING and WITH CHECK, and exactly SELECT, INSERT,
 * UPDATE and DELETE for the runtime role: no TRUNCATE (which ignores RLS), no ownership, nothing
 * for PUBLIC. Sequences of serial/identity columns get USAGE only.
 */
async function secureTable(
  tx: TransactionHandle,
  schema: string,
  table: string,
  options: { check: string; runtimeRole: string; tenantColumn: boolean },
): Promise<void> {
  const rel = `${quoteIdent(schema)}.${quoteIdent(table)}`;
  const state = await tableState(tx, schema, table);
  if (!state) {
    throw new TenantryError("migration_failed", `tenant table ${schema}.${table} does not exist`);
  }
  if (options.tenantColumn) await ensureTenantColumn(tx, rel, state);
  if (!state.rls) await tx.query(`ALTER TABLE ${rel} ENABLE ROW LEVEL SECURITY`);
  if (!state.forced) await tx.query(`ALTER TABLE ${rel} FORCE ROW LEVEL SECURITY`);
  await tx.query(`DROP POLICY IF EXISTS ${TENANT_POLICY} ON ${rel}`);
  await tx.query(
    `CREATE POLICY ${TENANT_POLICY} ON ${rel} AS PERMISSIVE FOR ALL TO PUBLIC
       USING (${options.check}) WITH CHECK (${options.check})`,
  );
  const runtime = quoteIdent(options.runtimeRole);
  await tx.query(`REVOKE ALL ON ${rel} FROM PUBLIC, ${runtime}`);
  await tx.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${rel} TO ${runtime}`);
  const seqs = await tx.query<{ seq: string }>(
    `SELECT quote_ident(sn.nspname) || '.' || quote_ident(s.relname) AS seq
       FROM pg_depend d
       JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
       JOIN pg_namespace sn ON sn.oid = s.relnamespace
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
        AND d.refobjid = $1 AND d.deptype IN ('a', 'i')`,
    [state.oid],
  );
  for (const { seq } of seqs.rows) {
    await tx.query(`REVOKE ALL ON SEQUENCE ${seq} FROM PUBLIC, ${runtime}`);
    await tx.query(`GRANT USAGE ON SEQUENCE ${seq} TO ${runtime}`);
  }
}

/** Tenant tables named by `migrations` (RLS: they live in `public`). */
export function sharedTenantTables(migrations: readonly AppMigration[]): string[] {
  return [...new Set(migrations.flatMap((m) => m.tenantTables))].sort();
}

/**
 * Row-level security: applies pending app migrations to the shared tables in `public`, each in one
 * transaction under an advisory lock (replicas starting together apply each version once), and
 * secures the tables they name. With `reassert`, also re-applies RLS and grants to every tenant
 * table of every migration (what `tenantry migrate` does). Returns the versions applied.
 */
export async function migrateSharedTables(
  db: Database,
  migrations: readonly AppMigration[],
  runtimeRole: string,
  options: { reassert?: boolean } = {},
): Promise<number[]> {
  const applied: number[] = [];
  const secure = (tx: TransactionHandle, table: string) =>
    secureTable(tx, "public", table, {
      check: `tenant_id = ${TENANT_ONCE_SQL}`,
      runtimeRole,
      tenantColumn: true,
    });
  for (const m of validateMigrations(migrations)) {
    try {
      const done = await db.transaction(async (tx) => {
        await tx.query("SELECT pg_advisory_xact_lock(hashtext($1))", [LOCK_SHARED]);
        const seen = await tx.query("SELECT 1 FROM tenantry_migrations WHERE scope = $1 AND version = $2", [
          SHARED_SCOPE,
          m.version,
        ]);
        if (seen.rowCount > 0) return false;
        await tx.query("SET LOCAL search_path TO public");
        await tx.exec(m.sql);
        await tx.query(`GRANT USAGE ON SCHEMA public TO ${quoteIdent(runtimeRole)}`);
        for (const table of m.tenantTables) await secure(tx, table);
        await tx.query("INSERT INTO tenantry_migrations (scope, version, name) VALUES ($1, $2, $3)", [
          SHARED_SCOPE,
          m.version,
          m.name,
        ]);
        return true;
      });
      if (done) applied.push(m.version);
    } catch (error) {
      throw failed(`app migration ${m.version} (${m.name})`, error);
    }
  }
  if (options.reassert) {
    try {
      await db.transaction(async (tx) => {
        await tx.query("SELECT pg_advisory_xact_lock(hashtext($1))", [LOCK_SHARED]);
        await tx.query(`GRANT USAGE ON SCHEMA public TO ${quoteIdent(runtimeRole)}`);
        for (const table of sharedTenantTables(migrations)) await secure(tx, table);
      });
    } catch (error) {
      throw failed("securing tenant tables", error);
    }
  }
  return applied;
}

/**
 * Schema per tenant: creates the tenant's schema (owned by the connecting admin role) if needed,
 * applies its pending app migrations with `search_path` set to it, and secures EVERY table in it:
 * forced RLS with a policy comparing `app.tenant_id` to this tenant's id (so a tool that names
 * `tenant_other.notes` still reads nothing), and runtime grants. All in one transaction: a tenant
 * is upgraded entirely or not at all. Returns the versions applied.
 */
export async function migrateTenantSchema(
  db: Database,
  record: Pick<TenantRecord, "id" | "key">,
  migrations: readonly AppMigration[],
  runtimeRole: string,
): Promise<number[]> {
  const schema = schemaNameForKey(record.key);
  const id = assertTenantId(record.id);
  const scope = schemaScope(schema);
  const s = quoteIdent(schema);
  const runtime = quoteIdent(runtimeRole);
  try {
    return await db.transaction(async (tx) => {
      await tx.query("SELECT pg_advisory_xact_lock(hashtext($1))", [scope]);
      // The schema records which tenant it belongs to; a key reused for another id is refused.
      const existing = await tx.query<{ tag: string | null }>(
        "SELECT obj_description(oid, 'pg_namespace') AS tag FROM pg_namespace WHERE nspname = $1",
        [schema],
      );
      const tag = `tenantry tenant ${id}`;
      const found = existing.rows[0];
      if (found && found.tag !== null && found.tag !== tag) {
        throw new TenantryError("migration_failed", `schema ${schema} belongs to another tenant`);
      }
      if (!found) {
        // A new schema has no history: drop records a purged schema of the same name left behind.
        await tx.query("DELETE FROM public.tenantry_migrations WHERE scope = $1", [scope]);
      }
      await tx.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
      if (found?.tag !== tag) await tx.query(`COMMENT ON SCHEMA ${s} IS ${quoteLiteral(tag)}`);
      await tx.query(`REVOKE ALL ON SCHEMA ${s} FROM PUBLIC, ${runtime}`);
      await tx.query(`GRANT USAGE ON SCHEMA ${s} TO ${runtime}`);

      const done = await tx.query<{ version: number }>(
        "SELECT version FROM public.tenantry_migrations WHERE scope = $1",
        [scope],
      );
      const seen = new Set(done.rows.map((r) => Number(r.version)));
      const applied: number[] = [];
      await tx.query(`SET LOCAL search_path TO ${s}`);
      for (const m of validateMigrations(migrations)) {
        if (seen.has(m.version)) continue;
        try {
          await tx.exec(m.sql);
        } catch (error) {
          throw failed(`app migration ${m.version} (${m.name}) in ${schema}`, error);
        }
        await tx.query("INSERT INTO public.tenantry_migrations (scope, version, name) VALUES ($1, $2, $3)", [
          scope,
          m.version,
          m.name,
        ]);
        applied.push(m.version);
      }

      const tables = await tx.query<{ name: string }>(
        `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname`,
        [schema],
      );
      for (const { name } of tables.rows) {
        await secureTable(tx, schema, name, {
          check: `${TENANT_ONCE_SQL} = ${quoteLiteral(id)}`,
          runtimeRole,
          tenantColumn: false,
        });
      }
      return applied;
    });
  } catch (error) {
    throw failed(`tenant ${id} (schema ${schema})`, error);
  }
}
