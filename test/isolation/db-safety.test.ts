import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkJwks, type DoctorReport, runDoctor } from "../../src/admin/doctor.js";
import { parseConfig } from "../../src/config/load.js";
import type { TenantryConfig } from "../../src/config/resolve.js";
import { openDatabases } from "../../src/db/open.js";
import { DataIsolation } from "../../src/isolation/data-isolation.js";
import { TENANT_POLICY } from "../../src/isolation/migrations.js";
import { TenantryApp } from "../../src/server/app.js";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { demoMigrations } from "../../src/tools/demo/index.js";
import { createTestDatabase, runSql, type TestDatabase } from "../support/postgres.js";
import { PG_HOST, PG_PORT, PG_SUPER_URL, serviceGate } from "../support/services.js";

/**
 * `tenantry doctor` (runDoctor) and startup (`checkSafety`) refuse a database where the runtime
 * role could bypass row-level security or a tenant table lacks forced RLS with a policy — and
 * pass on a correct one. Each weakening is undone before the next test.
 */

const pgUp = await serviceGate("postgres");

function failed(report: DoctorReport): string[] {
  return report.checks.filter((c) => !c.ok).map((c) => c.name);
}

function detail(report: DoctorReport, name: string): string {
  return report.checks.find((c) => c.name === name)?.detail ?? "";
}

/** Starts an app on `config` and returns the error its start refused with (it must refuse). */
async function startRefusal(config: TenantryConfig): Promise<unknown> {
  const app = new TenantryApp(config, { logger: false, controlFile: false });
  app.migrations(demoMigrations);
  try {
    await app.start();
    return undefined;
  } catch (error) {
    return error;
  } finally {
    await app.close();
  }
}

describe("JWKS check", () => {
  let issuer: TestIssuer;
  let silent: Server;
  let silentUrl: string;
  beforeAll(async () => {
    issuer = await startTestIssuer();
    silent = createServer(() => {}); // accepts, never answers
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    silentUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}/jwks.json`;
  });
  afterAll(async () => {
    await issuer?.close();
    silent?.closeAllConnections();
    await new Promise((resolve) => silent?.close(resolve));
  });

  const configWith = (auth: Record<string, unknown>) =>
    parseConfig(
      {
        server: { base_url: "https://mcp.example.com" },
        auth: { audience: "https://mcp.example.com", ...auth },
      },
      "test",
      {},
    );
  const jwks = (auth: Record<string, unknown>, timeoutMs?: number) =>
    checkJwks(configWith(auth).resolvedAuth, timeoutMs ? { timeoutMs } : {});

  it("fetches jwks_uri, or discovers it from the issuer", async () => {
    expect(
      await jwks({ provider: "auth0", issuer: `${issuer.issuer}/`, jwks_uri: issuer.jwksUri }),
    ).toMatchObject({
      ok: true,
    });
    const before = issuer.discoveryRequests;
    expect(await jwks({ provider: "oidc", issuer: issuer.issuer })).toMatchObject({ ok: true });
    expect(issuer.discoveryRequests).toBe(before + 1);
  });

  it("fails when the JWKS is unreachable or silent, within the timeout", async () => {
    const refused = await jwks({
      provider: "auth0",
      issuer: "https://x.example/",
      jwks_uri: "http://127.0.0.1:1/jwks",
    });
    expect(refused.ok).toBe(false);
    const started = Date.now();
    const slow = await jwks({ provider: "auth0", issuer: "https://x.example/", jwks_uri: silentUrl }, 300);
    expect(slow).toMatchObject({ ok: false, detail: expect.stringContaining("no answer within 300 ms") });
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it("is skipped for the dev provider", async () => {
    const dev = parseConfig({}, "test", {}).resolvedAuth;
    expect(await checkJwks(dev)).toMatchObject({ ok: true, detail: expect.stringMatching(/skipped/) });
  });
});

describe("doctor and startup on PGlite", () => {
  let app: TenantryApp;
  beforeAll(async () => {
    app = new TenantryApp(parseConfig({}, "test", {}), {
      logger: false,
      memoryDatabase: true,
      controlFile: false,
    });
    app.migrations(demoMigrations);
    await app.start();
  });
  afterAll(async () => app?.close());

  const doctor = () => runDoctor(app.config, { databases: app.dbs, migrations: demoMigrations });

  it("passes on the embedded database through the non-superuser tenantry_runtime", async () => {
    const r = await doctor();
    expect(failed(r)).toEqual([]);
    expect(detail(r, "database.connect")).toContain("tenantry_runtime");
    expect(r.checks.map((c) => c.name)).toEqual([
      "config.auth",
      "config.server",
      "config.database",
      "database.connect",
      "runtime_role.attributes",
      "runtime_role.membership",
      "runtime_role.ownership",
      "runtime_role.privileges",
      "tenant_tables.rls",
      "views",
      "large_objects",
      "jwks",
    ]);
  });

  it("fails when tenantry_runtime could bypass RLS, or a tenant table is not forced", async () => {
    await app.dbs.admin.exec("ALTER ROLE tenantry_runtime BYPASSRLS");
    try {
      expect(failed(await doctor())).toEqual(["runtime_role.attributes"]);
      await expect(app.isolation.checkSafety()).rejects.toMatchObject({ code: "unsafe_database_role" });
    } finally {
      await app.dbs.admin.exec("ALTER ROLE tenantry_runtime NOBYPASSRLS");
    }
    await app.dbs.admin.exec("ALTER TABLE notes NO FORCE ROW LEVEL SECURITY");
    try {
      expect(failed(await doctor())).toEqual(["tenant_tables.rls"]);
      await expect(app.isolation.checkSafety()).rejects.toMatchObject({ code: "unsafe_schema" });
    } finally {
      await app.dbs.admin.exec("ALTER TABLE notes FORCE ROW LEVEL SECURITY");
    }
    expect(failed(await doctor())).toEqual([]);
  });
});

describe.skipIf(!pgUp).each(["row_level_security", "schema_per_tenant"] as const)(
  "doctor and startup on PostgreSQL, %s",
  (isolation) => {
    let db: TestDatabase;
    let issuer: TestIssuer;
    let config: TenantryConfig;
    let tenantTable: string;

    const configFor = (database: Record<string, unknown>) =>
      parseConfig(
        {
          server: { base_url: "https://mcp.example.com" },
          auth: {
            provider: "auth0",
            issuer: `${issuer.issuer}/`,
            jwks_uri: issuer.jwksUri,
            audience: "https://mcp.example.com/mcp",
            multi_tenant: { isolation },
          },
          database,
        },
        "test",
        {},
      );
    const doctor = (c: TenantryConfig = config) => runDoctor(c, { migrations: demoMigrations });
    const asSuper = (sql: string) => runSql(db.superUrl, sql);

    beforeAll(async () => {
      db = await createTestDatabase();
      issuer = await startTestIssuer();
      config = configFor({ url: db.runtimeUrl, admin_url: db.adminUrl });
      // `tenantry migrate`, then two tenants as provisioning would make them.
      const app = new TenantryApp(config, { logger: false, controlFile: false });
      app.migrations(demoMigrations);
      try {
        await app.start();
        await app.isolation.migrateAll();
        for (const id of ["org_AbC", "org_abc"]) await app.tenants.create({ id: "test" }, { id, name: id });
        const key = (await app.tenants.show("org_AbC")).key;
        tenantTable = isolation === "row_level_security" ? "public.notes" : `tenant_${key}.notes`;
      } finally {
        await app.close();
      }
    }, 60_000);
    afterAll(async () => {
      await issuer?.close();
      await db?.drop();
    });

    it("passes on a correct deployment, and the app starts", async () => {
      const r = await doctor();
      expect(r.checks.filter((c) => !c.ok)).toEqual([]);
      expect(r.ok).toBe(true);
      expect(detail(r, "database.connect")).toContain(db.runtimeRole);
      expect(detail(r, "tenant_tables.rls")).toMatch(/^\d+ tenant tables have RLS enabled and forced/);
      expect(await startRefusal(config)).toBeUndefined();
    });

    it("flags large objects the runtime role owns (every tenant can read them), and the app still starts", async () => {
      const asRuntime = new pg.Client({ connectionString: db.runtimeUrl });
      await asRuntime.connect();
      try {
        const made = await asRuntime.query<{ oid: number }>("SELECT lo_from_bytea(0, 'acme only') AS oid");
        const oid = made.rows[0]?.oid;
        try {
          const r = await doctor();
          expect(failed(r)).toEqual(["large_objects"]);
          expect(detail(r, "large_objects")).toContain(`1 large object(s) owned by ${db.runtimeRole}`);
          // The data is shared already: refusing to serve would not unshare it.
          expect(await startRefusal(config)).toBeUndefined();
        } finally {
          await asRuntime.query("SELECT lo_unlink($1)", [oid]);
        }
      } finally {
        await asRuntime.end();
      }
      expect(failed(await doctor())).toEqual([]);
    });

    it("refuses a tenant table with RLS disabled", async () => {
      await asSuper(`ALTER TABLE ${tenantTable} DISABLE ROW LEVEL SECURITY`);
      try {
        const r = await doctor();
        expect(r.ok).toBe(false);
        expect(failed(r)).toEqual(["tenant_tables.rls"]);
        expect(detail(r, "tenant_tables.rls")).toContain(`${tenantTable} (RLS not enabled)`);
        expect(await startRefusal(config)).toMatchObject({ code: "unsafe_schema" });
      } finally {
        await asSuper(`ALTER TABLE ${tenantTable} ENABLE ROW LEVEL SECURITY`);
      }
    });

    it("refuses a tenant table whose RLS is not forced, or that has no policy", async () => {
      await asSuper(`ALTER TABLE ${tenantTable} NO FORCE ROW LEVEL SECURITY`);
      try {
        expect(detail(await doctor(), "tenant_tables.rls")).toContain("RLS not forced");
        expect(await startRefusal(config)).toMatchObject({ code: "unsafe_schema" });
      } finally {
        await asSuper(`ALTER TABLE ${tenantTable} FORCE ROW LEVEL SECURITY`);
      }
      await asSuper(`DROP POLICY ${TENANT_POLICY} ON ${tenantTable}`);
      try {
        expect(detail(await doctor(), "tenant_tables.rls")).toContain("no policy");
        expect(await startRefusal(config)).toMatchObject({ code: "unsafe_schema" });
      } finally {
        await repair(); // `tenantry migrate` puts the policy back
      }
      expect((await doctor()).ok).toBe(true);
    });

    /** `tenantry migrate` without the start-up check: re-secures every tenant table. */
    async function repair(): Promise<void> {
      const dbs = await openDatabases(config);
      try {
        const iso = new DataIsolation(dbs, isolation);
        iso.add(demoMigrations);
        const report = await iso.migrateAll();
        expect(report.tenants.every((t) => t.ok)).toBe(true);
      } finally {
        await dbs.close();
      }
    }

    it("refuses a SUPERUSER runtime role (a temporary role, dropped afterwards)", async () => {
      const role = `tt_su_${randomBytes(4).toString("hex")}`;
      await runSql(PG_SUPER_URL, `CREATE ROLE ${role} LOGIN SUPERUSER`);
      try {
        const su = configFor({
          url: `postgres://${role}@${PG_HOST}:${PG_PORT}/${db.name}`,
          admin_url: db.adminUrl,
        });
        const r = await doctor(su);
        expect(failed(r)).toContain("runtime_role.attributes");
        expect(detail(r, "runtime_role.attributes")).toContain("SUPERUSER");
        expect(await startRefusal(su)).toMatchObject({ code: "unsafe_database_role" });
      } finally {
        await runSql(
          PG_SUPER_URL,
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '${role}'`,
        );
        await runSql(db.superUrl, `DROP OWNED BY ${role}`);
        await runSql(PG_SUPER_URL, `DROP OWNED BY ${role}; DROP ROLE ${role}`);
      }
    });

    it("refuses a BYPASSRLS runtime role, and one that is a member of the owner role", async () => {
      await asSuper(`ALTER ROLE ${db.runtimeRole} BYPASSRLS`);
      try {
        expect(failed(await doctor())).toEqual(["runtime_role.attributes"]);
        expect(await startRefusal(config)).toMatchObject({ code: "unsafe_database_role" });
      } finally {
        await asSuper(`ALTER ROLE ${db.runtimeRole} NOBYPASSRLS`);
      }
      await asSuper(`GRANT ${db.ownerRole} TO ${db.runtimeRole}`);
      try {
        const r = await doctor();
        expect(failed(r)).toEqual(["runtime_role.membership"]);
        expect(detail(r, "runtime_role.membership")).toContain(db.ownerRole);
        expect(await startRefusal(config)).toMatchObject({ code: "unsafe_database_role" });
      } finally {
        await asSuper(`REVOKE ${db.ownerRole} FROM ${db.runtimeRole}`);
      }
    });

    it("refuses a runtime role that owns a tenant table or may TRUNCATE one", async () => {
      await asSuper(`ALTER TABLE ${tenantTable} OWNER TO ${db.runtimeRole}`);
      try {
        const r = await doctor();
        expect(failed(r)).toContain("runtime_role.ownership");
        expect(detail(r, "runtime_role.ownership")).toContain(tenantTable);
        expect(await startRefusal(config)).toMatchObject({ code: "unsafe_database_role" });
      } finally {
        await asSuper(`ALTER TABLE ${tenantTable} OWNER TO ${db.ownerRole}`);
      }
      await asSuper(`GRANT TRUNCATE ON ${tenantTable} TO ${db.runtimeRole}`);
      try {
        expect(failed(await doctor())).toEqual(["runtime_role.privileges"]);
      } finally {
        await asSuper(`REVOKE TRUNCATE ON ${tenantTable} FROM ${db.runtimeRole}`);
      }
      expect((await doctor()).ok).toBe(true);
    });

    it("catches a table the runtime role can reach that nobody declared, and a readable materialized view", async () => {
      await asSuper(
        `CREATE TABLE public.forgotten (x int); ALTER TABLE public.forgotten OWNER TO ${db.ownerRole};
         GRANT SELECT ON public.forgotten TO ${db.runtimeRole}`,
      );
      try {
        const r = await doctor();
        expect(failed(r)).toEqual(["tenant_tables.rls"]);
        expect(detail(r, "tenant_tables.rls")).toContain("public.forgotten");
      } finally {
        await asSuper("DROP TABLE public.forgotten");
      }
      await asSuper(
        `CREATE MATERIALIZED VIEW public.all_notes AS SELECT * FROM ${tenantTable};
         GRANT SELECT ON public.all_notes TO ${db.runtimeRole}`,
      );
      try {
        const r = await doctor();
        expect(failed(r)).toEqual(["views"]);
        expect(detail(r, "views")).toContain("public.all_notes: materialized view");
      } finally {
        await asSuper("DROP MATERIALIZED VIEW public.all_notes");
      }
    });

    it("flags a config whose runtime and owner roles are the same", async () => {
      const same = configFor({ url: db.adminUrl });
      const r = await doctor(same);
      expect(failed(r)).toEqual(expect.arrayContaining(["config.database", "runtime_role.ownership"]));
      expect(await startRefusal(same)).toMatchObject({ code: "unsafe_database_role" });
    });
  },
);
