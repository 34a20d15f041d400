import pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { ensurePgliteRuntimeRole, runCoreMigrations } from "../../src/db/core-migrations.js";
import type { Databases } from "../../src/db/database.js";
import { openDatabases } from "../../src/db/open.js";
import { type AppMigration, DataIsolation } from "../../src/isolation/data-isolation.js";
import { TENANT_POLICY, validateMigrations } from "../../src/isolation/migrations.js";
import { schemaNameForKey } from "../../src/isolation/names.js";
import type { IsolationName } from "../../src/isolation/strategy.js";
import { demoMigrations } from "../../src/tools/demo/index.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { record } from "../support/records.js";
import { serviceGate } from "../support/services.js";

/** App migrations per strategy, on PGlite and on PostgreSQL with separate owner and runtime roles. */

const pgUp = await serviceGate("postgres");

/** A table with a serial column: its sequence needs USAGE for the runtime role. */
const EVENTS: AppMigration = {
  version: 2,
  name: "events",
  sql: "CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL);",
  tenantTables: ["events"],
};

interface Env {
  dbs: Databases;
  /** Runs SQL behind every role's back (superuser). */
  su<R extends Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  runtime: string;
  owner: string;
  isolation(strategy: IsolationName, migrations?: readonly AppMigration[]): DataIsolation;
  close(): Promise<void>;
}

async function pgliteEnv(): Promise<Env> {
  const dbs = await openDatabases(parseConfig({}, "test", {}), { memory: true });
  await ensurePgliteRuntimeRole(dbs.admin, dbs.runtimeRole!);
  await runCoreMigrations(dbs.admin, dbs.runtimeRoleName);
  return {
    dbs,
    su: async (sql, params) => (await dbs.admin.query(sql, params)).rows as never,
    runtime: "tenantry_runtime",
    owner: "postgres",
    isolation(strategy, migrations = demoMigrations) {
      const i = new DataIsolation(dbs, strategy);
      i.add(migrations);
      return i;
    },
    close: () => dbs.close(),
  };
}

async function postgresEnv(db: TestDatabase): Promise<Env> {
  const config = parseConfig(
    { database: { url: db.runtimeUrl, admin_url: db.adminUrl, pool_size: 4 } },
    "test",
    {},
  );
  const dbs = await openDatabases(config);
  await runCoreMigrations(dbs.admin, dbs.runtimeRoleName);
  const su = new pg.Pool({ connectionString: db.superUrl, max: 2 });
  // An idle client whose backend goes away emits 'error' on the pool: unheard, it would be an
  // unhandled error of the whole run (the failure of one CI run here was never reproduced).
  su.on("error", () => {});
  return {
    dbs,
    su: async (sql, params) => (await su.query(sql, params)).rows as never,
    runtime: db.runtimeRole,
    owner: db.ownerRole,
    isolation(strategy, migrations = demoMigrations) {
      const i = new DataIsolation(dbs, strategy);
      i.add(migrations);
      return i;
    },
    async close() {
      await su.end();
      await dbs.close();
    },
  };
}

const backends = [
  { name: "PGlite", skip: false, open: async () => ({ env: await pgliteEnv(), drop: async () => {} }) },
  {
    name: "PostgreSQL",
    skip: !pgUp,
    open: async () => {
      const db = await createTestDatabase();
      return { env: await postgresEnv(db), drop: () => db.drop() };
    },
  },
];

/** An InitPlan's value as EXPLAIN names it: `$0` on PostgreSQL 15, `(InitPlan 1).col1` on 17 (PGlite). */
const INIT_PLAN_VALUE = String.raw`(?:\$0|\(InitPlan 1\)\.col1)`;

/** EXPLAIN's lines, one string. */
const planText = (result: { rows: Record<string, unknown>[] }): string =>
  result.rows.map((r) => String(r["QUERY PLAN"])).join("\n");

describe("validateMigrations", () => {
  const ok: AppMigration = { version: 1, name: "a", sql: "CREATE TABLE a (x int);", tenantTables: ["a"] };
  const invalid = expect.objectContaining({ code: "invalid_argument" });

  it("sorts by version and refuses duplicates, bad versions, empty scripts and odd table names", () => {
    expect(validateMigrations([{ ...ok, version: 3 }, ok]).map((m) => m.version)).toEqual([1, 3]);
    expect(() => validateMigrations([ok, ok])).toThrow(invalid);
    expect(() => validateMigrations([{ ...ok, version: 0 }])).toThrow(invalid);
    expect(() => validateMigrations([{ ...ok, version: 1.5 }])).toThrow(invalid);
    expect(() => validateMigrations([{ ...ok, sql: "  " }])).toThrow(invalid);
    for (const t of ["Notes", "a;b", 'a"b', "public.notes", "", "x".repeat(64)]) {
      expect(() => validateMigrations([{ ...ok, tenantTables: [t] }])).toThrow(invalid);
    }
  });
});

describe.each(backends)("app migrations on $name", (backend) => {
  const run = backend.skip ? describe.skip : describe;
  let env: Env;
  let drop: () => Promise<void>;
  beforeEach(async () => {
    ({ env, drop } = await backend.open());
  });
  afterEach(async () => {
    await env?.close();
    await drop?.();
  });

  run("row_level_security", () => {
    it("applies each version once and records it with scope 'app'", async () => {
      const iso = env.isolation("row_level_security", [...demoMigrations, EVENTS]);
      expect(await iso.migrateShared()).toEqual([1, 2]);
      expect(await iso.migrateShared()).toEqual([]);
      const rows = await env.su<{ scope: string; version: number }>(
        "SELECT scope, version FROM tenantry_migrations WHERE scope <> 'core' ORDER BY version",
      );
      expect(rows).toEqual([
        { scope: "app", version: 1 },
        { scope: "app", version: 2 },
      ]);
    });

    it("gives tenant tables tenant_id from the setting, an index leading with it, forced RLS and a fail-closed policy", async () => {
      await env.isolation("row_level_security", [...demoMigrations, EVENTS]).migrateShared();
      for (const table of ["notes", "events"]) {
        const [col] = await env.su<{ type: string; notnull: boolean; def: string }>(
          `SELECT format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS notnull,
                  pg_get_expr(d.adbin, d.adrelid) AS def
             FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = $1::regclass AND a.attname = 'tenant_id'`,
          [table],
        );
        expect(col).toMatchObject({ type: "text", notnull: true });
        expect(col?.def).toMatch(/NULLIF\(current_setting\('app\.tenant_id'::text, true\), ''::text\)/);
        const idx = await env.su(
          `SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = $1::regclass AND a.attname = 'tenant_id'`,
          [table],
        );
        expect(idx).toHaveLength(1);
        const [rel] = await env.su<{ rls: boolean; forced: boolean; owner: string }>(
          `SELECT relrowsecurity AS rls, relforcerowsecurity AS forced, pg_get_userbyid(relowner) AS owner
             FROM pg_class WHERE oid = $1::regclass`,
          [table],
        );
        expect(rel).toEqual({ rls: true, forced: true, owner: env.owner });
        const policies = await env.su<{ policyname: string; cmd: string; qual: string; with_check: string }>(
          "SELECT policyname, cmd, qual, with_check FROM pg_policies WHERE tablename = $1",
          [table],
        );
        expect(policies).toHaveLength(1);
        expect(policies[0]).toMatchObject({ policyname: TENANT_POLICY, cmd: "ALL" });
        for (const expr of [policies[0]!.qual, policies[0]!.with_check]) {
          expect(expr).toMatch(
            /tenant_id = \( SELECT NULLIF\(current_setting\('app\.tenant_id'::text, true\), ''::text\)/,
          );
        }
      }
    });

    it("grants the runtime role exactly SELECT/INSERT/UPDATE/DELETE and sequence USAGE, and no ownership", async () => {
      await env.isolation("row_level_security", [...demoMigrations, EVENTS]).migrateShared();
      const privs = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"];
      for (const table of ["notes", "events"]) {
        const [row] = await env.su<Record<string, boolean>>(
          `SELECT ${privs.map((p, i) => `has_table_privilege($1, $2::regclass, '${p}') AS p${i}`).join(", ")}`,
          [env.runtime, table],
        );
        expect(Object.values(row!)).toEqual([true, true, true, true, false, false, false]);
      }
      const [seq] = await env.su<{ usage: boolean; sel: boolean; upd: boolean }>(
        `SELECT has_sequence_privilege($1, 'events_id_seq', 'USAGE') AS usage,
                has_sequence_privilege($1, 'events_id_seq', 'SELECT') AS sel,
                has_sequence_privilege($1, 'events_id_seq', 'UPDATE') AS upd`,
        [env.runtime],
      );
      expect(seq).toEqual({ usage: true, sel: false, upd: false });
      const owned = await env.su(
        "SELECT relname FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = $1)",
        [env.runtime],
      );
      expect(owned).toEqual([]);
    });

    it("the policy reads the tenant once per statement (an InitPlan), not once per row, and still admits only its rows", async () => {
      const iso = env.isolation("row_level_security");
      await iso.migrateShared();
      for (const tenant of ["org_AbC", "org_abc"]) {
        const tx = iso.open(record(tenant, tenant));
        await tx.query("INSERT INTO notes (title, body) SELECT 'n' || g, $1 FROM generate_series(1, 3) g", [
          tenant,
        ]);
        await tx.finish(true);
      }
      const tx = iso.open(record("org_AbC", "k1"));
      const plans = [
        planText(await tx.query("EXPLAIN (COSTS OFF) SELECT title FROM notes ORDER BY title")),
        planText(await tx.query("EXPLAIN (COSTS OFF) SELECT kind FROM tenantry_audit")), // core migration 5
      ];
      const bodies = await tx.query<{ body: string }>("SELECT DISTINCT body FROM notes");
      await tx.finish(true);
      for (const plan of plans) {
        expect(plan).toMatch(/InitPlan/);
        expect(plan).toMatch(new RegExp(`tenant_id = ${INIT_PLAN_VALUE}`));
        // Per row, the old form showed the call in the scan's Filter; the InitPlan's own output is
        // not printed without VERBOSE.
        expect(plan).not.toMatch(/current_setting/);
      }
      expect(bodies.rows).toEqual([{ body: "org_AbC" }]);
    });

    it("seed defect 7: an INSERT that omits tenant_id gets the transaction's tenant", async () => {
      const iso = env.isolation("row_level_security", [...demoMigrations, EVENTS]);
      await iso.migrateShared();
      const tx = iso.open(record("org_AbC", "k1"));
      await tx.query("INSERT INTO notes (title, body) VALUES ('t', 'b')");
      await tx.query("INSERT INTO events (kind) VALUES ('created')");
      await tx.finish(true);
      expect(await env.su("SELECT tenant_id FROM notes")).toEqual([{ tenant_id: "org_AbC" }]);
      expect(await env.su("SELECT tenant_id FROM events")).toEqual([{ tenant_id: "org_AbC" }]);
    });

    it("keeps an app-declared text tenant_id and refuses any other type; failures roll back entirely", async () => {
      const own: AppMigration = {
        version: 1,
        name: "own",
        sql: "CREATE TABLE own (tenant_id text, x int); CREATE INDEX own_tid_x ON own (tenant_id, x);",
        tenantTables: ["own"],
      };
      await env.isolation("row_level_security", [own]).migrateShared();
      const idx = await env.su("SELECT indexname FROM pg_indexes WHERE tablename = 'own'");
      expect(idx).toEqual([{ indexname: "own_tid_x" }]); // the app's index leads with tenant_id: none added

      const bad: AppMigration = {
        version: 2,
        name: "uuid tenant",
        sql: "CREATE TABLE bad (tenant_id uuid);",
        tenantTables: ["bad"],
      };
      await expect(env.isolation("row_level_security", [own, bad]).migrateShared()).rejects.toMatchObject({
        code: "migration_failed",
      });
      expect(await env.su("SELECT to_regclass('public.bad') AS t")).toEqual([{ t: null }]);
      expect(await env.su("SELECT version FROM tenantry_migrations WHERE scope = 'app'")).toEqual([
        { version: 1 },
      ]);
    });

    it("migrateAll rewrites a policy of the earlier per-row form to the once-per-statement form", async () => {
      const iso = env.isolation("row_level_security");
      await iso.migrateShared();
      const perRow = "tenant_id = NULLIF(current_setting('app.tenant_id', true), '')";
      await env.su(`ALTER POLICY ${TENANT_POLICY} ON notes USING (${perRow}) WITH CHECK (${perRow})`);
      const policy = async () =>
        (await env.su<{ qual: string }>("SELECT qual FROM pg_policies WHERE tablename = 'notes'"))[0]!.qual;
      expect(await policy()).not.toContain("SELECT");
      await iso.migrateAll();
      expect(await policy()).toMatch(/^\(tenant_id = \( SELECT NULLIF\(current_setting/);
    });

    it("migrateAll re-grants exactly what is needed and re-forces RLS after tampering", async () => {
      const iso = env.isolation("row_level_security");
      await iso.migrateShared();
      await env.su(`GRANT TRUNCATE ON notes TO "${env.runtime}"`);
      await env.su("ALTER TABLE notes NO FORCE ROW LEVEL SECURITY");
      await env.su(`DROP POLICY ${TENANT_POLICY} ON notes`);
      await expect(iso.checkSafety()).rejects.toMatchObject({ code: "unsafe_database_role" });
      expect(await iso.migrateAll()).toEqual({ core: [], shared: [], tenants: [] });
      await expect(iso.checkSafety()).resolves.toBeUndefined();
      const [row] = await env.su<{ t: boolean; forced: boolean }>(
        `SELECT has_table_privilege($1, 'notes', 'TRUNCATE') AS t,
                (SELECT relforcerowsecurity FROM pg_class WHERE oid = 'notes'::regclass) AS forced`,
        [env.runtime],
      );
      expect(row).toEqual({ t: false, forced: true });
    });
  });

  run("schema_per_tenant", () => {
    const a = record("org_AbC", "1a");
    const b = record("org_abc", "1b");

    it("creates the tenant's schema owned by the admin role, migrated and secured, once", async () => {
      const iso = env.isolation("schema_per_tenant");
      expect(await iso.migrateShared()).toEqual([]);
      expect(await iso.provisionTenant(a)).toEqual([1]);
      expect(await iso.provisionTenant(a)).toEqual([]);
      const schema = schemaNameForKey(a.key);
      const [nsp] = await env.su<{ owner: string; usage: boolean; create: boolean }>(
        `SELECT pg_get_userbyid(nspowner) AS owner, has_schema_privilege($2, oid, 'USAGE') AS usage,
                has_schema_privilege($2, oid, 'CREATE') AS create
           FROM pg_namespace WHERE nspname = $1`,
        [schema, env.runtime],
      );
      expect(nsp).toEqual({ owner: env.owner, usage: true, create: false });
      expect(
        await env.su("SELECT scope, version FROM tenantry_migrations WHERE scope LIKE 'schema:%'"),
      ).toEqual([{ scope: `schema:${schema}`, version: 1 }]);
      const [rel] = await env.su<{ rls: boolean; forced: boolean; policy: string; tid: number }>(
        `SELECT c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
                (SELECT qual FROM pg_policies WHERE schemaname = $1 AND tablename = 'notes') AS policy,
                (SELECT count(*)::int FROM pg_attribute WHERE attrelid = c.oid AND attname = 'tenant_id') AS tid
           FROM pg_class c WHERE c.oid = to_regclass($1 || '.notes')`,
        [schema],
      );
      expect(rel).toMatchObject({ rls: true, forced: true, tid: 0 });
      expect(rel?.policy).toContain("'org_AbC'::text");
      await expect(iso.checkSafety()).resolves.toBeUndefined();
    });

    it("the schema's policy compares the tenant read once per statement, not once per row", async () => {
      const iso = env.isolation("schema_per_tenant");
      await iso.provisionTenant(a);
      const tx = iso.open(a);
      await tx.query("INSERT INTO notes (title, body) VALUES ('t', 'b')");
      const plan = planText(await tx.query("EXPLAIN (COSTS OFF) SELECT title FROM notes"));
      const { rows } = await tx.query("SELECT title FROM notes");
      await tx.finish(true);
      expect(plan).toMatch(/InitPlan/);
      expect(plan).toMatch(new RegExp(`${INIT_PLAN_VALUE} = 'org_AbC'::text`));
      expect(plan).not.toMatch(/current_setting/);
      expect(rows).toEqual([{ title: "t" }]);
    });

    it("secures every table a migration creates in the schema, listed or not", async () => {
      const extra: AppMigration = {
        version: 2,
        name: "unlisted",
        sql: "CREATE TABLE unlisted (id bigserial PRIMARY KEY, v text);",
        tenantTables: [],
      };
      const iso = env.isolation("schema_per_tenant", [...demoMigrations, extra]);
      await iso.provisionTenant(a);
      const schema = schemaNameForKey(a.key);
      const [rel] = await env.su<{ forced: boolean; usage: boolean }>(
        `SELECT relforcerowsecurity AS forced,
                has_sequence_privilege($2, $1 || '.unlisted_id_seq', 'USAGE') AS usage
           FROM pg_class WHERE oid = to_regclass($1 || '.unlisted')`,
        [schema, env.runtime],
      );
      expect(rel).toEqual({ forced: true, usage: true });
    });

    it("migrateAll upgrades every schema, reports a tenant whose upgrade failed, and goes on", async () => {
      const c = record("tenant-c", "1c");
      for (const t of [a, b, c]) {
        await env.su("INSERT INTO tenantry_tenants (id, key, name, status) VALUES ($1, $2, $1, 'active')", [
          t.id,
          t.key,
        ]);
        await env.isolation("schema_per_tenant").provisionTenant(t);
      }
      // Sabotage b: the column v2 adds is already there, so its upgrade fails.
      await env.su(`ALTER TABLE ${schemaNameForKey(b.key)}.notes ADD COLUMN tag text`);
      const v2: AppMigration = {
        version: 2,
        name: "tags",
        sql: "ALTER TABLE notes ADD COLUMN tag text; CREATE TABLE labels (name text PRIMARY KEY);",
        tenantTables: ["labels"],
      };
      const report = await env.isolation("schema_per_tenant", [...demoMigrations, v2]).migrateAll();
      expect(report.shared).toEqual([]);
      expect(report.tenants.map((t) => ({ id: t.id, ok: t.ok }))).toEqual([
        { id: "org_AbC", ok: true },
        { id: "org_abc", ok: false },
        { id: "tenant-c", ok: true },
      ]);
      expect(report.tenants[0]?.applied).toEqual([2]);
      expect(report.tenants[1]?.error).toMatch(/tag/);
      // The failed tenant is untouched: still at v1, no half-created table.
      const versions = await env.su<{ scope: string; v: number }>(
        "SELECT scope, max(version)::int AS v FROM tenantry_migrations WHERE scope LIKE 'schema:%' GROUP BY scope ORDER BY scope",
      );
      expect(versions).toEqual([
        { scope: `schema:${schemaNameForKey(a.key)}`, v: 2 },
        { scope: `schema:${schemaNameForKey(b.key)}`, v: 1 },
        { scope: `schema:${schemaNameForKey(c.key)}`, v: 2 },
      ]);
      expect(await env.su("SELECT to_regclass($1) AS t", [`${schemaNameForKey(b.key)}.labels`])).toEqual([
        { t: null },
      ]);
      // Fixed, the next run catches it up and leaves the others alone.
      await env.su(`ALTER TABLE ${schemaNameForKey(b.key)}.notes DROP COLUMN tag`);
      const again = await env.isolation("schema_per_tenant", [...demoMigrations, v2]).migrateAll();
      expect(again.tenants.map((t) => [t.id, t.ok, t.applied])).toEqual([
        ["org_AbC", true, []],
        ["org_abc", true, [2]],
        ["tenant-c", true, []],
      ]);
    });

    it("rebuilds a schema that was dropped (purge, restore) instead of trusting stale records", async () => {
      const iso = env.isolation("schema_per_tenant");
      await iso.provisionTenant(a);
      await env.su(`DROP SCHEMA ${schemaNameForKey(a.key)} CASCADE`);
      expect(await iso.provisionTenant(a)).toEqual([1]);
      expect(
        await env.su("SELECT to_regclass($1) IS NOT NULL AS ok", [`${schemaNameForKey(a.key)}.notes`]),
      ).toEqual([{ ok: true }]);
    });

    it("refuses to hand a schema to a tenant other than the one it was made for", async () => {
      const iso = env.isolation("schema_per_tenant");
      await iso.provisionTenant(a);
      await expect(iso.provisionTenant(record("someone-else", a.key))).rejects.toMatchObject({
        code: "migration_failed",
      });
    });
  });
});
