import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { notesCreate, notesList, notesMigrations } from "../../src/tools/demo/notes.js";
import { notesListStatement, titlesOf } from "../support/notes-tools.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { callTool, pollUntil, REPLICA_AUDIENCE, type Replica, startReplica } from "../support/replicas.js";
import { serviceGate } from "../support/services.js";

/*
 * PostgreSQL goes away under a running server: every connection of its database is terminated
 * (a failover, a restart, an operator's pg_terminate_backend). The pools, the registry's LISTEN
 * connection and the audit writer all lose their connections at once. Calls in flight may fail;
 * none may answer with another tenant's data, none may go unaudited, and the server must serve
 * again as soon as PostgreSQL accepts connections, without a restart.
 */

const pgUp = await serviceGate("postgres");
const admin = { id: "database-outage-test" };

describe.skipIf(!pgUp)("PostgreSQL terminates every connection under a running server", () => {
  let db: TestDatabase;
  let issuer: TestIssuer;
  let server: Replica;
  const tokens: Record<string, string> = {};
  const superuser = () => new pg.Client({ connectionString: db.superUrl });
  const asSuper = async (sql: string) => {
    const su = superuser();
    await su.connect();
    try {
      await su.query(sql);
    } finally {
      await su.end();
    }
  };
  const terminate = async (where = "true") => {
    const su = superuser();
    await su.connect();
    try {
      const { rowCount } = await su.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid() AND ${where}`,
      );
      return rowCount ?? 0;
    } finally {
      await su.end();
    }
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    issuer = await startTestIssuer();
    server = await startReplica({
      issuer,
      tools: [notesCreate, notesList, notesListStatement],
      migrations: notesMigrations,
      config: {
        database: { url: db.runtimeUrl, admin_url: db.adminUrl, pool_size: 4 },
        // Only a NOTIFY can explain a change seen within seconds.
        auth: { multi_tenant: { registry_cache_ttl_ms: 60_000, default_rate_limit: 1_000_000 } },
        rate_limit: { max_in_flight_per_tenant: 0 },
        audit: { sink: "database", flush_interval_ms: 20 },
      },
    });
    for (const id of ["acme", "globex"]) {
      await server.app.tenants.create(admin, { id, name: id });
      tokens[id] = await issuer.auth0Token({
        orgId: id,
        sub: `auth0|${id}-user`,
        audience: REPLICA_AUDIENCE,
      });
    }
  }, 120_000);
  afterAll(async () => {
    await server?.close();
    await issuer?.close();
    await db?.drop();
  });

  it("calls fail cleanly while it is gone, then succeed; each tenant sees only its rows; every call is audited", async () => {
    const sent: Record<string, number> = { acme: 0, globex: 0 };
    const call = (tenant: string, name: string, args: Record<string, unknown> = {}) => {
      sent[tenant]!++;
      return callTool(server.mcpUrl, tokens[tenant]!, name, args);
    };
    for (const t of ["acme", "globex"]) {
      expect((await call(t, "notes_create", { title: `${t}-before`, body: "" })).status).toBe(200);
    }

    // Load in flight while every connection dies.
    const inFlight = ["acme", "globex"].flatMap((t) =>
      Array.from({ length: 20 }, (_, i) =>
        call(t, i % 2 ? "notes_list" : "notes_list_statement").then((r) => ({ t, r })),
      ),
    );
    expect(await terminate()).toBeGreaterThan(0);
    for (const { t, r } of await Promise.all(inFlight)) {
      // A failed call is an error answer (a tool error, or 503): never another tenant's rows.
      expect([200, 503]).toContain(r.status);
      const titles = titlesOf(r);
      if (titles) expect(titles).toEqual([`${t}-before`]);
    }

    // Served again without a restart, by both transaction modes.
    await pollUntil(
      async () => titlesOf(await call("acme", "notes_list")) !== undefined,
      10_000,
      "a call after the outage",
    );
    for (const t of ["acme", "globex"]) {
      expect((await call(t, "notes_create", { title: `${t}-after`, body: "" })).status).toBe(200);
    }
    for (const t of ["acme", "globex"]) {
      const expected = [`${t}-after`, `${t}-before`];
      expect(titlesOf(await call(t, "notes_list"))).toEqual(expected);
      expect(titlesOf(await call(t, "notes_list_statement"))).toEqual(expected);
    }

    // The audit writer lost its connection too: its batch was retried, not dropped.
    await server.app.audit.flush();
    const su = superuser();
    await su.connect();
    try {
      const { rows } = await su.query<{ tenant_id: string; n: number }>(
        `SELECT tenant_id, count(*)::int AS n FROM tenantry_audit
          WHERE kind = 'request' AND action = 'tools/call' GROUP BY tenant_id ORDER BY tenant_id`,
      );
      expect(rows).toEqual([
        { tenant_id: "acme", n: sent.acme },
        { tenant_id: "globex", n: sent.globex },
      ]);
    } finally {
      await su.end();
    }
  });

  it("while PostgreSQL refuses new connections, a call fails with service_unavailable; then it serves", async () => {
    await asSuper(`ALTER ROLE "${db.runtimeRole}" NOLOGIN`);
    try {
      await terminate(`usename = '${db.runtimeRole}'`);
      const r = await callTool(server.mcpUrl, tokens.acme!, "notes_list");
      expect(r.status).toBe(200);
      expect(r.body.result).toMatchObject({
        isError: true,
        content: [{ type: "text", text: "service_unavailable: no database connection is available" }],
      });
    } finally {
      await asSuper(`ALTER ROLE "${db.runtimeRole}" LOGIN`);
    }
    await pollUntil(
      async () => titlesOf(await callTool(server.mcpUrl, tokens.acme!, "notes_list")) !== undefined,
      5_000,
      "served again",
    );
  });

  it("while the registry cannot be read, a tenant not in the cache gets 503 with Retry-After; then it is served", async () => {
    server.app.registry.invalidate(); // acme must be read from the registry
    await asSuper(`ALTER ROLE "${db.ownerRole}" NOLOGIN`);
    try {
      await terminate(`usename = '${db.ownerRole}'`);
      const r = await callTool(server.mcpUrl, tokens.acme!, "notes_list");
      expect(r.status).toBe(503);
      expect(r.body).toMatchObject({ error: "service_unavailable" });
      expect(r.headers.get("retry-after")).toBe("1");
    } finally {
      await asSuper(`ALTER ROLE "${db.ownerRole}" LOGIN`);
    }
    await pollUntil(
      async () => titlesOf(await callTool(server.mcpUrl, tokens.acme!, "notes_list")) !== undefined,
      10_000,
      "served again",
    );
  });

  it("the registry hears of other replicas' writes again once its LISTEN connection is back", async () => {
    const listen = "application_name = 'tenantry-listen'";
    const listeners = async () => {
      const su = superuser();
      await su.connect();
      try {
        const { rows } = await su.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND ${listen}`,
        );
        return rows.map((r) => r.pid);
      } finally {
        await su.end();
      }
    };
    // The first test terminated it too: wait for the reconnection it schedules.
    await pollUntil(async () => (await listeners()).length === 1, 10_000, "LISTEN connected");
    const [before] = await listeners();
    expect(await terminate(listen)).toBe(1);
    await pollUntil(
      async () => (await listeners()).some((pid) => pid !== before),
      10_000,
      "LISTEN reconnects",
    );

    // Warm the cache, then change the tenant the way another replica would: a write and a NOTIFY.
    expect(titlesOf(await callTool(server.mcpUrl, tokens.globex!, "notes_list"))).toBeDefined();
    const owner = new pg.Client({ connectionString: db.adminUrl });
    await owner.connect();
    try {
      await owner.query("UPDATE tenantry_tenants SET status = 'suspended' WHERE id = 'globex'");
      await owner.query("SELECT pg_notify('tenantry_tenants', 'globex')");
    } finally {
      await owner.end();
    }
    // With a 60 s cache, only the notification explains a refusal within seconds.
    await pollUntil(
      async () => (await callTool(server.mcpUrl, tokens.globex!, "notes_list")).status === 403,
      5_000,
      "suspension seen",
    );
    const refused = await callTool(server.mcpUrl, tokens.globex!, "notes_list");
    expect(refused.body).toMatchObject({ error: "tenant_suspended" });
    expect(titlesOf(await callTool(server.mcpUrl, tokens.acme!, "notes_list"))).toEqual([
      "acme-after",
      "acme-before",
    ]);
  });
});
