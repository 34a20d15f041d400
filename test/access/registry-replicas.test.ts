import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { defineTool } from "../../src/tools/define-tool.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import {
  callTool,
  pollUntil,
  postMcp,
  REPLICA_AUDIENCE,
  type Replica,
  startReplica,
} from "../support/replicas.js";
import { serviceGate } from "../support/services.js";

/*
 * "Changing a tenant's config takes effect on the next request on every replica." Two servers on
 * one real PostgreSQL database, each caching registry entries for 60 s: only the NOTIFY that a
 * registry write sends can explain replica 2 seeing a change made through replica 1 within a
 * second. A control proves the cache really holds entries that long.
 */

const pgUp = await serviceGate("postgres");

const tools = ["alpha", "beta"].map((name) =>
  defineTool({ name, description: name, input: z.object({}), run: () => ({ name }) }),
);
const TTL_MS = 60_000;
const admin = { id: "registry-replicas-test" };

const listNames = async (mcpUrl: string, token: string): Promise<string[] | string> => {
  const r = await postMcp(mcpUrl, token, "tools/list");
  if (r.status !== 200) return String(r.body.error);
  return ((r.body.result as { tools: { name: string }[] }).tools ?? []).map((t) => t.name);
};

describe.skipIf(!pgUp)("registry changes reach every replica (PostgreSQL LISTEN/NOTIFY)", () => {
  let db: TestDatabase;
  let issuer: TestIssuer;
  let one: Replica;
  let two: Replica;
  let token: string;
  const latencies: Record<string, number> = {};

  beforeAll(async () => {
    db = await createTestDatabase();
    issuer = await startTestIssuer();
    const config = {
      database: { url: db.runtimeUrl, admin_url: db.adminUrl },
      auth: { multi_tenant: { registry_cache_ttl_ms: TTL_MS, default_rate_limit: 100_000 } },
    };
    // One after the other: both run the (idempotent) migrations at start.
    one = await startReplica({ issuer, config, tools, replicaId: "one" });
    two = await startReplica({ issuer, config, tools, replicaId: "two" });
    await one.app.tenants.create(admin, { id: "acme", name: "Acme" });
    token = await issuer.auth0Token({ orgId: "acme", sub: "auth0|alice", audience: REPLICA_AUDIENCE });
  });
  afterAll(async () => {
    await two?.close();
    await one?.close();
    await issuer?.close();
    await db?.drop();
    console.info(`[registry-replicas] replica 2 saw changes after (ms): ${JSON.stringify(latencies)}`);
  });

  const seenOnTwo = async (what: string, expected: string[] | string) => {
    latencies[what] = Math.round(
      await pollUntil(
        async () => JSON.stringify(await listNames(two.mcpUrl, token)) === JSON.stringify(expected),
        1000,
        what,
      ),
    );
  };

  it("allowed_tools changed through replica 1 applies on replica 2's next requests", async () => {
    // Warm replica 2's cache: without NOTIFY it would keep this record for 60 s.
    expect(await listNames(two.mcpUrl, token)).toEqual(["alpha", "beta"]);
    await one.app.tenants.update(admin, "acme", { allowedTools: ["alpha"] });
    await seenOnTwo("allowed_tools", ["alpha"]);
    const denied = await callTool(two.mcpUrl, token, "beta");
    expect(denied.body.error).toEqual({ code: -32602, message: "Unknown tool: beta" });
    await one.app.tenants.update(admin, "acme", { allowedTools: [] });
    await seenOnTwo("allowed_tools reset", ["alpha", "beta"]);
  });

  it("a rate-limit change applies on replica 2 (RateLimit-Policy shows the new quota)", async () => {
    const quota = async () => (await postMcp(two.mcpUrl, token, "ping")).headers.get("ratelimit-policy");
    expect(await quota()).toBe('"default";q=100000;w=60');
    await one.app.tenants.update(admin, "acme", { rateLimit: 5000 });
    latencies.rate_limit = Math.round(
      await pollUntil(async () => (await quota()) === '"default";q=5000;w=60', 1000, "rate limit"),
    );
  });

  it("suspend through replica 1 refuses on replica 2; resume serves again", async () => {
    expect(await listNames(two.mcpUrl, token)).toEqual(["alpha", "beta"]);
    await one.app.tenants.suspend(admin, "acme", "test");
    await seenOnTwo("suspend", "tenant_suspended");
    const refused = await postMcp(two.mcpUrl, token, "tools/list");
    expect(refused.status).toBe(403);
    expect(refused.body.error).toBe("tenant_suspended");
    await one.app.tenants.resume(admin, "acme");
    await seenOnTwo("resume", ["alpha", "beta"]);
  });

  it("control: a write that does not NOTIFY stays invisible to a warm replica (the cache is real)", async () => {
    expect(await listNames(two.mcpUrl, token)).toEqual(["alpha", "beta"]);
    const owner = new pg.Client({ connectionString: db.adminUrl });
    await owner.connect();
    try {
      await owner.query("UPDATE tenantry_tenants SET allowed_tools = $1 WHERE id = 'acme'", [["beta"]]);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(await listNames(two.mcpUrl, token)).toEqual(["alpha", "beta"]);
      // The same notification a registry write sends makes both replicas re-read.
      await owner.query("SELECT pg_notify('tenantry_tenants', 'acme')");
      await seenOnTwo("manual notify", ["beta"]);
      expect(await listNames(one.mcpUrl, token)).toEqual(["beta"]);
    } finally {
      await owner.query("UPDATE tenantry_tenants SET allowed_tools = '{}' WHERE id = 'acme'").catch(() => {});
      await owner.query("SELECT pg_notify('tenantry_tenants', 'acme')").catch(() => {});
      await owner.end();
    }
  });

  it("a NOTIFY of '*' from tool SQL (the runtime role) empties no replica's cache", async () => {
    for (const replica of [one, two])
      expect(await listNames(replica.mcpUrl, token)).toEqual(["alpha", "beta"]);
    const owner = new pg.Client({ connectionString: db.adminUrl });
    const runtime = new pg.Client({ connectionString: db.runtimeUrl });
    await owner.connect();
    await runtime.connect();
    try {
      await owner.query("UPDATE tenantry_tenants SET allowed_tools = $1 WHERE id = 'acme'", [["beta"]]);
      await runtime.query("SELECT pg_notify('tenantry_tenants', '*')");
      await runtime.query("NOTIFY tenantry_tenants, '*'");
      await new Promise((resolve) => setTimeout(resolve, 300));
      // Still the cached record: '*' named no tenant, and emptied nothing.
      expect(await listNames(two.mcpUrl, token)).toEqual(["alpha", "beta"]);
      expect(await listNames(one.mcpUrl, token)).toEqual(["alpha", "beta"]);
    } finally {
      await owner.query("UPDATE tenantry_tenants SET allowed_tools = '{}' WHERE id = 'acme'").catch(() => {});
      await owner.query("SELECT pg_notify('tenantry_tenants', 'acme')").catch(() => {});
      await owner.end();
      await runtime.end();
    }
  });
});

describe("registry changes on embedded PGlite apply on the very next request (in-process invalidation)", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      tenants: [{ id: "acme" }],
      tools,
      config: { auth: { multi_tenant: { registry_cache_ttl_ms: TTL_MS } } },
    });
  });
  afterAll(async () => h?.close());

  it("update and suspend are seen without any wait", async () => {
    const token = h.tenant("acme").token;
    expect(await listNames(h.mcpUrl, token)).toEqual(["alpha", "beta"]);
    await h.app.tenants.update(admin, "acme", { allowedTools: ["beta"] });
    expect(await listNames(h.mcpUrl, token)).toEqual(["beta"]);
    await h.app.tenants.update(admin, "acme", { featureFlags: { x: true }, allowedTools: [] });
    expect(await listNames(h.mcpUrl, token)).toEqual(["alpha", "beta"]);
    await h.app.tenants.suspend(admin, "acme");
    expect(await listNames(h.mcpUrl, token)).toBe("tenant_suspended");
    await h.app.tenants.resume(admin, "acme");
    expect(await listNames(h.mcpUrl, token)).toEqual(["alpha", "beta"]);
  });
});
