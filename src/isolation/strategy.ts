import type { Queryable } from "../db/database.js";
import type { TenantRecord } from "../tenancy/tenant.js";
import { assertTenantId } from "../tenancy/tenant-id.js";
import { quoteIdent, schemaNameForKey } from "./names.js";
import type { EnterTenant } from "./tenant-db.js";

/**
 * How tenant data is kept apart in the database:
 * - `row_level_security`: shared tables with a `tenant_id` column and forced RLS policies;
 * - `schema_per_tenant`: one schema per tenant (plus RLS inside it, as defence in depth);
 * - `prefix`: object-storage prefixes for files, and RLS (as `row_level_security`) for the database.
 */
export type IsolationName = "row_level_security" | "schema_per_tenant" | "prefix";

/** The setting every policy reads; set per transaction only. */
export const TENANT_SETTING = "app.tenant_id";

/** The tenant bound to the current transaction, NULL when unset or empty, so that policies fail closed. */
export const CURRENT_TENANT_SQL = "NULLIF(current_setting('app.tenant_id', true), '')";

/**
 * The same, as policies read it: once per statement. A scalar subquery that names no column is an
 * InitPlan, evaluated at the first row and kept, so each row is compared with a value; written
 * bare, `current_setting` is called for every row a scan looks at (the name looked up, the value
 * copied into a new text, NULLIF), which costs more than the comparison itself on a shared table
 * where a scan passes over other tenants' rows. Which rows a policy admits does not change: the
 * binding is set before the statement runs and holds until its transaction ends.
 */
export const TENANT_ONCE_SQL = `(SELECT ${CURRENT_TENANT_SQL})`;

/**
 * Session state a tool's SQL can create that would outlive its transaction on the connection, and
 * so reach the next call there, another tenant's as likely as not: WITH HOLD cursors and temporary
 * tables (which hold rows), session-level settings (`SET`, `set_config(…, false)`), sequence values
 * (`currval`, `lastval`), and session-level advisory locks (`pg_advisory_lock`), which would keep
 * their key taken for every tenant's calls on every other connection until this one closed, and a
 * session-level `SET ROLE` (to a role the runtime role is a member of), which `RESET ALL` leaves
 * alone: every later call on the connection would run as that role. Every tenant transaction ends
 * with these statements, before COMMIT (and after a ROLLBACK, which keeps advisory locks and
 * sequence values). `RESET ALL` leaves the connection's startup parameters as they were. What
 * else `DISCARD ALL` does is not needed here or cannot run here: `UNLISTEN *` (a tool cannot read
 * notifications), and `DISCARD ALL` itself is refused inside a transaction.
 */
export const SESSION_RESET = [
  "CLOSE ALL",
  "DISCARD TEMP",
  "RESET ALL",
  "DISCARD SEQUENCES",
  "SELECT pg_advisory_unlock_all()",
  "RESET ROLE",
] as const;

/** Whether tenant tables live in one schema per tenant (else shared tables in `public` under RLS). */
export function usesSchemas(isolation: IsolationName): boolean {
  return isolation === "schema_per_tenant";
}

/**
 * Binds a transaction to a tenant in one round trip, before any statement of the tool runs.
 * `set_config(name, value, true)` is local to the transaction, like `SET LOCAL`, so it cannot
 * outlive the call or leak to the next user of the connection (seed defects 1 and 2 set it on a
 * pool). `app.tenant_id` is set under every strategy, so RLS policies hold as defence in depth.
 * `role` is the runtime role to switch to (PGlite, whose one connection is a superuser); on
 * PostgreSQL the connection already logs in as the runtime role.
 *
 * Everything is a bound parameter; the search path is a quoted identifier built from the
 * registry's immutable key, never from the tenant id.
 */
/** Values that can stand inside a single-quoted SQL literal as they are: no quote, backslash or control. */
const LITERAL_SAFE = /^[A-Za-z0-9._:"-]*$/;

export function enterTenant(
  isolation: IsolationName,
  record: TenantRecord,
  role: string | undefined,
): EnterTenant {
  assertTenantId(record.id);
  const settings: [name: string, value: string][] = [["app.tenant_id", record.id]];
  if (role) settings.push(["role", role]);
  if (usesSchemas(isolation)) settings.push(["search_path", quoteIdent(schemaNameForKey(record.key))]);
  const params = settings.map(([, value]) => value);
  const calls = settings.map(([name], i) => `set_config('${name}', $${i + 1}, true)`);
  const sql = `SELECT ${calls.join(", ")}`;
  const enter: EnterTenant = Object.assign(
    async (tx: Queryable): Promise<void> => {
      await tx.query(sql, params);
    },
    {
      // The same binding as a statement that returns no rows, sent ahead of a tool's statement in
      // one exchange. set_config is volatile: it runs once, for the one row the subquery yields.
      binding: {
        name: `tenantry_bind_${settings.map(([name]) => name.replace(/\W/g, "")).join("_")}`,
        text: `SELECT FROM (SELECT ${calls.map((c, i) => `${c} AS c${i}`).join(", ")}) AS b WHERE ${calls.map((_, i) => `c${i} IS NULL`).join(" AND ")}`,
        values: params,
        reset: SESSION_RESET,
        // Under RLS a plan is the same for every tenant: the policies read the binding when the
        // statement runs, never when it is planned (`(SELECT current_setting(…))`, an InitPlan).
        cacheable: !usesSchemas(isolation),
      },
      reset: SESSION_RESET.join("; "),
    },
  );
  // The same binding as one parameter-free statement, sent with BEGIN in a single round trip.
  // Only when every value is plainly literal-safe (tenant ids are [A-Za-z0-9._:-]; role and schema
  // names come from config and the registry); otherwise the parameterised form above is used.
  if (params.every((p) => LITERAL_SAFE.test(p))) {
    let i = 0;
    enter.prelude = sql.replace(/\$\d+/g, () => `'${params[i++]!}'`);
  }
  return enter;
}
