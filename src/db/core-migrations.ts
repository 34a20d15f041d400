import type { Database } from "./database.js";

/**
 * Tenantry's own tables, owned by the admin role. The runtime role gets no privilege on the
 * registry (tool code must not list other tenants) and only INSERT on the audit log, whose rows a
 * tenant can read back through RLS, and nothing on impersonation grants.
 */
export interface CoreMigration {
  version: number;
  name: string;
  sql: (runtimeRole: string) => string;
}

export const NOTIFY_CHANNEL = "tenantry_tenants";

const q = (ident: string) => `"${ident.replaceAll('"', '""')}"`;

export const CORE_MIGRATIONS: CoreMigration[] = [
  {
    version: 1,
    name: "registry",
    sql: () => `
      CREATE SEQUENCE IF NOT EXISTS tenantry_tenant_key_seq;
      CREATE TABLE IF NOT EXISTS tenantry_tenants (
        id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._:-]{1,64}$'),
        key text NOT NULL UNIQUE CHECK (key ~ '^[a-z0-9]{1,40}$'),
        name text NOT NULL,
        status text NOT NULL CHECK (status IN ('provisioning','active','suspended','trial','deprovisioned')),
        expires_at timestamptz,
        rate_limit integer CHECK (rate_limit IS NULL OR rate_limit > 0),
        allowed_tools text[] NOT NULL DEFAULT '{}',
        feature_flags jsonb NOT NULL DEFAULT '{}'::jsonb,
        provisioning_step text,
        archive_path text,
        purge_after timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        status_changed_at timestamptz NOT NULL DEFAULT now()
      );`,
  },
  {
    version: 2,
    name: "audit",
    sql: (runtimeRole) => `
      CREATE TABLE IF NOT EXISTS tenantry_audit (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        kind text NOT NULL,
        tenant_id text,
        user_id text,
        impersonated_by text,
        action text NOT NULL,
        tool text,
        outcome text NOT NULL,
        error_code text,
        latency_ms double precision,
        request_id text,
        replica text,
        details jsonb
      );
      CREATE INDEX IF NOT EXISTS tenantry_audit_tenant_at ON tenantry_audit (tenant_id, at);
      CREATE INDEX IF NOT EXISTS tenantry_audit_at ON tenantry_audit (at);
      ALTER TABLE tenantry_audit ENABLE ROW LEVEL SECURITY;
      ALTER TABLE tenantry_audit FORCE ROW LEVEL SECURITY;
      DROP POLICY IF EXISTS tenantry_audit_read_own ON tenantry_audit;
      CREATE POLICY tenantry_audit_read_own ON tenantry_audit FOR SELECT
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
      DROP POLICY IF EXISTS tenantry_audit_insert ON tenantry_audit;
      CREATE POLICY tenantry_audit_insert ON tenantry_audit FOR INSERT WITH CHECK (true);
      GRANT INSERT, SELECT ON tenantry_audit TO ${q(runtimeRole)};
      GRANT USAGE ON SEQUENCE tenantry_audit_id_seq TO ${q(runtimeRole)};`,
  },
  {
    // Impersonation grants live in the database so every replica honours them; only a hash of
    // the grant is stored. The owner (migrations, admin API, `tenantry audit`) reads and writes
    // the whole audit log: FORCE ROW LEVEL SECURITY would otherwise hide it from its own owner.
    // The runtime role (tool code) may only append events of the tenant its transaction is bound
    // to, never forge another tenant's.
    version: 3,
    name: "impersonation",
    sql: () => `
      CREATE TABLE IF NOT EXISTS tenantry_impersonations (
        grant_hash text PRIMARY KEY,
        admin_id text NOT NULL,
        admin_issuer text NOT NULL,
        tenant_id text NOT NULL,
        reason text NOT NULL CHECK (length(btrim(reason)) > 0),
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL
      );
      CREATE INDEX IF NOT EXISTS tenantry_impersonations_expires ON tenantry_impersonations (expires_at);
      REVOKE ALL ON tenantry_impersonations FROM PUBLIC;
      DROP POLICY IF EXISTS tenantry_audit_read_owner ON tenantry_audit;
      CREATE POLICY tenantry_audit_read_owner ON tenantry_audit FOR SELECT TO CURRENT_USER USING (true);
      DROP POLICY IF EXISTS tenantry_audit_write_owner ON tenantry_audit;
      CREATE POLICY tenantry_audit_write_owner ON tenantry_audit FOR INSERT TO CURRENT_USER WITH CHECK (true);
      ALTER POLICY tenantry_audit_insert ON tenantry_audit
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));`,
  },
  {
    // Every registry write bumps `version`, so a lifecycle step that reads a record, works for a
    // while (deprovision archives for minutes) and then writes can say "only if nothing changed it
    // since": several replicas and the CLI share this table, and no process-local lock covers them.
    version: 4,
    name: "registry_version",
    sql: () => `
      ALTER TABLE tenantry_tenants ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;`,
  },
  {
    // The audit log's tenant policies read the binding once per statement (an InitPlan), as tenant
    // tables' policies do (TENANT_ONCE_SQL), instead of once per row.
    version: 5,
    name: "audit_policy_once",
    sql: () => `
      ALTER POLICY tenantry_audit_read_own ON tenantry_audit
        USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')));
      ALTER POLICY tenantry_audit_insert ON tenantry_audit
        WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')));`,
  },
  {
    // Each renewal of a lease (a restore's or a purge's hold, see RegistryLease) writes a value of
    // its own here, so that a holder whose renewal reply was lost can tell, by reading the row,
    // whether that renewal landed rather than take its own write for another's.
    version: 6,
    name: "registry_lease_nonce",
    sql: () => `
      ALTER TABLE tenantry_tenants ADD COLUMN IF NOT EXISTS lease_nonce text;`,
  },
];

/** Creates the runtime role on PGlite, where the single connection is a superuser. */
export async function ensurePgliteRuntimeRole(db: Database, role: string): Promise<void> {
  const exists = await db.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [role]);
  if (exists.rowCount === 0) {
    await db.exec(`CREATE ROLE ${q(role)} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE`);
  }
}

/** Applies core migrations once each, recorded in `tenantry_migrations`. Returns the versions applied. */
export async function runCoreMigrations(db: Database, runtimeRole: string): Promise<number[]> {
  await db.exec(`CREATE TABLE IF NOT EXISTS tenantry_migrations (
    scope text NOT NULL, version integer NOT NULL, name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (scope, version))`);
  const applied: number[] = [];
  for (const m of CORE_MIGRATIONS) {
    const done = await db.transaction(async (tx) => {
      // Serialise concurrent migrators (several replicas starting at once).
      await tx.query("SELECT pg_advisory_xact_lock(hashtext('tenantry_core_migrations'))");
      const seen = await tx.query("SELECT 1 FROM tenantry_migrations WHERE scope = 'core' AND version = $1", [
        m.version,
      ]);
      if (seen.rowCount > 0) return false;
      for (const statement of splitStatements(m.sql(runtimeRole))) await tx.query(statement);
      await tx.query("INSERT INTO tenantry_migrations (scope, version, name) VALUES ('core', $1, $2)", [
        m.version,
        m.name,
      ]);
      return true;
    });
    if (done) applied.push(m.version);
  }
  return applied;
}

/** Splits a migration script on top-level semicolons (our scripts hold no functions or quoted `;`). */
export function splitStatements(sql: string): string[] {
  return sql
    .split(/;\s*(?:\n|$)/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
