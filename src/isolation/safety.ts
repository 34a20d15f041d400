import type { Databases, Queryable } from "../db/database.js";
import { TenantryError } from "../errors.js";

/** One finding of the database safety inspection (also a `tenantry doctor` check). */
export interface SafetyCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

/** Names of the checks {@link inspectDatabase} returns, in order. */
export const SAFETY_CHECKS = [
  "runtime_role.attributes",
  "runtime_role.membership",
  "runtime_role.ownership",
  "runtime_role.privileges",
  "tenant_tables.rls",
  "views",
] as const;

const ROLE_CHECKS = new Set<string>(SAFETY_CHECKS.slice(0, 4));

/** Schemas of tenant data under schema_per_tenant (`schemaNameForKey`). */
const TENANT_SCHEMA_RE = "^tenant_[a-z0-9]{1,40}$";

/** Schemas PostgreSQL owns; never inspected. */
const USER_SCHEMAS = "n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'";

/** At most this many names in one detail line. */
const SHOWN = 10;

function list(names: string[]): string {
  const shown = names.slice(0, SHOWN).join(", ");
  return names.length > SHOWN ? `${shown} and ${names.length - SHOWN} more` : shown;
}

/**
 * The role the runtime side really runs as: the role PGlite transactions switch to, or
 * `current_user` of a runtime connection (the URL may leave the user to PGUSER).
 */
export async function runtimeRoleOf(dbs: Databases): Promise<string> {
  if (dbs.runtimeRole) return dbs.runtimeRole;
  const r = await dbs.runtime.query<{ role: string }>("SELECT current_user AS role");
  const role = r.rows[0]?.role;
  if (!role) throw new TenantryError("backend_unavailable", "could not read the runtime role");
  return role;
}

interface TableRow {
  [key: string]: unknown;
  rel: string;
  owner: string;
  runtime_owns: boolean;
  rls: boolean;
  forced: boolean;
  policies: number;
  excess: string[];
}

/**
 * Inspects, from the catalog, whether the runtime role could read or write across tenants:
 *
 * - `runtime_role.attributes`: not SUPERUSER, not BYPASSRLS, not CREATEROLE (which could grant
 *   itself the owner's role on PostgreSQL before 16);
 * - `runtime_role.membership`: not a member of a role that is superuser, BYPASSRLS or owns a
 *   tenant table or schema (it could `SET ROLE` to it);
 * - `runtime_role.ownership`: owns no tenant table and no schema holding one (owners bypass RLS
 *   unless it is forced, and may drop or alter it);
 * - `runtime_role.privileges`: no TRUNCATE, REFERENCES or TRIGGER on tenant tables (TRUNCATE
 *   ignores RLS), no CREATE on their schemas (no shadow tables in the search path);
 * - `tenant_tables.rls`: every tenant table has RLS enabled AND forced AND at least one policy;
 * - `views`: no view the runtime role can read runs with the rights of a role that bypasses RLS,
 *   and no materialized view (which has no RLS) is readable by it.
 *
 * A tenant table is any table, in a schema other than PostgreSQL's own, that the runtime role holds
 * any privilege on (directly, through PUBLIC or a role it belongs to), that lies in a tenant schema
 * (`tenant_<key>`), or that `tenantTables` names in `public`. "Reachable by the runtime role" being
 * the rule, a table the app forgot to declare is caught as well; a table the runtime role cannot
 * reach at all (the registry) is no tenant's business.
 */
export async function inspectDatabase(
  db: Queryable,
  runtimeRole: string,
  options: { tenantTables?: readonly string[] } = {},
): Promise<SafetyCheck[]> {
  const roleRows = await db.query<{ rolsuper: boolean; rolbypassrls: boolean; rolcreaterole: boolean }>(
    "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = $1",
    [runtimeRole],
  );
  const role = roleRows.rows[0];
  if (!role) {
    return SAFETY_CHECKS.map((name) => ({
      name,
      ok: false,
      detail: `runtime role ${runtimeRole} does not exist`,
    }));
  }
  const checks: SafetyCheck[] = [];
  const attrs = [
    role.rolsuper && "SUPERUSER",
    role.rolbypassrls && "BYPASSRLS",
    role.rolcreaterole && "CREATEROLE",
  ].filter((a): a is string => typeof a === "string");
  checks.push({
    name: "runtime_role.attributes",
    ok: attrs.length === 0,
    detail:
      attrs.length === 0
        ? `${runtimeRole} is NOSUPERUSER NOBYPASSRLS NOCREATEROLE`
        : `${runtimeRole} has ${attrs.join(", ")}: it would bypass row-level security`,
  });

  const tables = await db.query<TableRow>(
    `WITH rt AS (SELECT oid FROM pg_roles WHERE rolname = $1)
     SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS rel,
            pg_get_userbyid(c.relowner) AS owner,
            c.relowner = rt.oid AS runtime_owns,
            c.relrowsecurity AS rls,
            c.relforcerowsecurity AS forced,
            (SELECT count(*)::int FROM pg_policy p WHERE p.polrelid = c.oid) AS policies,
            ARRAY(SELECT priv FROM unnest(ARRAY['TRUNCATE', 'REFERENCES', 'TRIGGER']) AS priv
                   WHERE has_table_privilege(rt.oid, c.oid, priv)) AS excess
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace CROSS JOIN rt
      WHERE c.relkind IN ('r', 'p') AND ${USER_SCHEMAS}
        AND (n.nspname ~ $2
             OR (n.nspname = 'public' AND c.relname = ANY($3::text[]))
             OR has_table_privilege(rt.oid, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
             OR has_any_column_privilege(rt.oid, c.oid, 'SELECT, INSERT, UPDATE, REFERENCES'))
      ORDER BY 1`,
    [runtimeRole, TENANT_SCHEMA_RE, [...(options.tenantTables ?? [])]],
  );
  const schemas = await db.query<{ nsp: string; owner: string; runtime_owns: boolean; can_create: boolean }>(
    `WITH rt AS (SELECT oid FROM pg_roles WHERE rolname = $1)
     SELECT quote_ident(n.nspname) AS nsp, pg_get_userbyid(n.nspowner) AS owner,
            n.nspowner = rt.oid AS runtime_owns, has_schema_privilege(rt.oid, n.oid, 'CREATE') AS can_create
       FROM pg_namespace n CROSS JOIN rt
      WHERE ${USER_SCHEMAS}
        AND (n.nspname = 'public' OR n.nspname ~ $2
             OR EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
                          AND has_table_privilege(rt.oid, c.oid, 'SELECT, INSERT, UPDATE, DELETE')))
      ORDER BY 1`,
    [runtimeRole, TENANT_SCHEMA_RE],
  );

  const owners = [...new Set([...tables.rows.map((t) => t.owner), ...schemas.rows.map((s) => s.owner)])];
  const members = await db.query<{ rolname: string; why: string }>(
    `WITH rt AS (SELECT oid FROM pg_roles WHERE rolname = $1)
     SELECT r.rolname,
            CASE WHEN r.rolsuper THEN 'superuser' WHEN r.rolbypassrls THEN 'BYPASSRLS'
                 ELSE 'owner of tenant tables' END AS why
       FROM pg_roles r CROSS JOIN rt
      WHERE r.oid <> rt.oid AND pg_has_role(rt.oid, r.oid, 'MEMBER')
        AND (r.rolsuper OR r.rolbypassrls OR r.rolname = ANY($2::text[]))
      ORDER BY 1`,
    [runtimeRole, owners],
  );
  checks.push({
    name: "runtime_role.membership",
    ok: members.rows.length === 0,
    detail:
      members.rows.length === 0
        ? `${runtimeRole} is not a member of a privileged or owning role`
        : `${runtimeRole} is a member of ${list(members.rows.map((m) => `${m.rolname} (${m.why})`))}`,
  });

  const ownedTables = tables.rows.filter((t) => t.runtime_owns).map((t) => t.rel);
  const ownedSchemas = schemas.rows.filter((s) => s.runtime_owns).map((s) => `schema ${s.nsp}`);
  const owned = [...ownedTables, ...ownedSchemas];
  checks.push({
    name: "runtime_role.ownership",
    ok: owned.length === 0,
    detail:
      owned.length === 0
        ? `${runtimeRole} owns none of ${tables.rows.length} tenant tables or their schemas`
        : `${runtimeRole} owns ${list(owned)}`,
  });

  const excess = [
    ...tables.rows.filter((t) => t.excess.length > 0).map((t) => `${t.excess.join("/")} on ${t.rel}`),
    ...schemas.rows.filter((s) => s.can_create).map((s) => `CREATE on schema ${s.nsp}`),
  ];
  checks.push({
    name: "runtime_role.privileges",
    ok: excess.length === 0,
    detail:
      excess.length === 0
        ? `${runtimeRole} has no TRUNCATE/REFERENCES/TRIGGER on tenant tables and no CREATE on their schemas`
        : `${runtimeRole} has ${list(excess)}`,
  });

  const weak = tables.rows
    .map((t) => {
      const missing = [
        !t.rls && "RLS not enabled",
        !t.forced && "RLS not forced",
        t.policies === 0 && "no policy",
      ].filter((m): m is string => typeof m === "string");
      return missing.length > 0 ? `${t.rel} (${missing.join(", ")})` : undefined;
    })
    .filter((w): w is string => w !== undefined);
  checks.push({
    name: "tenant_tables.rls",
    ok: weak.length === 0,
    detail:
      weak.length === 0
        ? `${tables.rows.length} tenant tables have RLS enabled and forced with a policy`
        : `${list(weak)}`,
  });

  const views = await db.query<{ rel: string; why: string }>(
    `WITH rt AS (SELECT oid FROM pg_roles WHERE rolname = $1)
     SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS rel,
            CASE WHEN c.relkind = 'm' THEN 'materialized view (no RLS)'
                 ELSE 'view owned by ' || o.rolname || ' (bypasses RLS)' END AS why
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_roles o ON o.oid = c.relowner CROSS JOIN rt
      WHERE c.relkind IN ('v', 'm') AND ${USER_SCHEMAS}
        AND has_table_privilege(rt.oid, c.oid, 'SELECT')
        AND (c.relkind = 'm'
             OR ((o.rolsuper OR o.rolbypassrls)
                 AND NOT coalesce(array_to_string(c.reloptions, ',') ~ 'security_invoker=(true|on|yes|1)', false)))
      ORDER BY 1`,
    [runtimeRole],
  );
  checks.push({
    name: "views",
    ok: views.rows.length === 0,
    detail:
      views.rows.length === 0
        ? `no view readable by ${runtimeRole} escapes row-level security`
        : list(views.rows.map((v) => `${v.rel}: ${v.why}`)),
  });
  return checks;
}

/**
 * Throws when any check failed: `unsafe_database_role` for the runtime role's attributes,
 * memberships, ownership or privileges; else `unsafe_schema` for tables or views.
 */
export function assertSafe(checks: readonly SafetyCheck[]): void {
  const failed = checks.filter((c) => !c.ok);
  if (failed.length === 0) return;
  const code = failed.some((c) => ROLE_CHECKS.has(c.name)) ? "unsafe_database_role" : "unsafe_schema";
  throw new TenantryError(
    code,
    `refusing to serve tenants: ${failed.map((c) => `${c.name}: ${c.detail}`).join("; ")}`,
    { details: { checks: failed } },
  );
}
