import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { whoami } from "../../src/tools/demo/whoami.js";
import { adminApi, mcp, toolResult } from "./helpers.js";

const HEADER = "X-Tenantry-Impersonate";

describe("impersonation", () => {
  let h: Harness;
  let admin: string;
  beforeAll(async () => {
    h = await startHarness({ tenants: [{ id: "acme" }, { id: "globex" }], tools: [whoami] });
    admin = await h.adminToken({ sub: "auth0|ops" });
  });
  afterAll(async () => h?.close());

  const grant = async (token: string, body: Record<string, unknown>) =>
    adminApi(h, token, "POST", "/impersonations", body);

  it("needs a reason and a registered tenant", async () => {
    for (const reason of [undefined, "", "   ", 42, "x".repeat(501)]) {
      const r = await grant(admin, { tenant_id: "acme", ...(reason !== undefined ? { reason } : {}) });
      expect(r.status, String(reason)).toBe(400);
      expect(r.body.error).toBe("invalid_argument");
    }
    expect((await grant(admin, { tenant_id: "nobody", reason: "x" })).body.error).toBe("unknown_tenant");
    expect((await grant(admin, { tenant_id: "../acme", reason: "x" })).body.error).toBe("invalid_tenant_id");
    expect((await h.app.dbs.admin.query("SELECT 1 FROM tenantry_impersonations")).rowCount).toBe(0);
  });

  it("is written to the audit log with its reason before it takes effect, and every request under it is audited", async () => {
    const r = await grant(admin, { tenant_id: "acme", reason: "  ticket 4711: notes missing " });
    expect(r.status).toBe(201);
    const g = r.body as { grant: string; tenant_id: string; expires_at: string; reason: string };
    expect(g.grant).toMatch(/^tig_[A-Za-z0-9_-]{43}$/);
    expect(g.tenant_id).toBe("acme");
    const ttl = Date.parse(g.expires_at) - Date.now();
    expect(ttl).toBeGreaterThan(890_000);
    expect(ttl).toBeLessThanOrEqual(900_000);

    // The grant is not stored in the clear.
    const stored = await h.app.dbs.admin.query<{ grant_hash: string }>(
      "SELECT grant_hash FROM tenantry_impersonations",
    );
    expect(stored.rows.map((x) => x.grant_hash)).not.toContain(g.grant);

    const me = toolResult(
      await mcp(
        h,
        admin,
        "tools/call",
        { name: "whoami", arguments: {} },
        { [HEADER]: g.grant, "X-Request-Id": "imp-1" },
      ),
    );
    expect(me).toMatchObject({
      tenantId: "acme",
      userId: "admin:auth0|ops",
      impersonatedBy: "admin:auth0|ops",
    });
    // Acting as the tenant, the admin sees the tenant's tools, not the admin tools.
    const list = await mcp(h, admin, "tools/list", {}, { [HEADER]: g.grant, "X-Request-Id": "imp-2" });
    expect((list.body.result as { tools: { name: string }[] }).tools.map((t) => t.name)).toEqual(["whoami"]);

    await h.app.audit.flush();
    const log = await h.app.adminServices.auditLog.query({ tenant: "acme" });
    const granted = log.find((e) => e.action === "impersonation.grant")!;
    expect(granted).toMatchObject({
      kind: "admin",
      userId: "admin:auth0|ops",
      outcome: "ok",
      details: { reason: "ticket 4711: notes missing", expires_at: g.expires_at },
    });
    const requests = log.filter((e) => e.requestId?.startsWith("imp-"));
    expect(requests).toHaveLength(2);
    for (const e of requests) {
      expect(e).toMatchObject({
        tenantId: "acme",
        userId: "admin:auth0|ops",
        impersonatedBy: "admin:auth0|ops",
      });
    }
    expect(log.indexOf(granted)).toBeLessThan(log.indexOf(requests[0]!));
  });

  it("is refused with 403 forbidden for unknown grants, other admins, and non-admin tokens", async () => {
    const g = (await grant(admin, { tenant_id: "acme", reason: "support" })).body.grant as string;
    const otherAdmin = await h.adminToken({ sub: "auth0|someone-else" });
    const tenantUser = h.tenant("acme").token;
    const globexUser = h.tenant("globex").token;
    const cases: [string, string][] = [
      [otherAdmin, g],
      [tenantUser, g],
      [globexUser, g],
      [admin, `tig_${"A".repeat(43)}`],
      [admin, "not a grant"],
      [admin, ""],
    ];
    for (const [i, [token, value]] of cases.entries()) {
      const r = await mcp(
        h,
        token,
        "tools/call",
        { name: "whoami", arguments: {} },
        {
          [HEADER]: value,
          "X-Request-Id": `forbidden-${i}`,
        },
      );
      expect(r.status).toBe(403);
      expect(r.body.error).toBe("forbidden");
    }
    // Each refusal is audited, naming who tried.
    await h.app.audit.flush();
    const log = (await h.app.adminServices.auditLog.query({ limit: 1000 })).filter((e) =>
      e.requestId?.startsWith("forbidden-"),
    );
    expect(log.map((e) => [e.outcome, e.errorCode, e.userId, e.tenantId])).toEqual([
      ["denied", "forbidden", "admin:auth0|someone-else", null],
      ["denied", "forbidden", "auth0|user-of-acme", "acme"],
      ["denied", "forbidden", "auth0|user-of-globex", "globex"],
      ["denied", "forbidden", "admin:auth0|ops", null],
      ["denied", "forbidden", "admin:auth0|ops", null],
      ["denied", "forbidden", "admin:auth0|ops", null],
    ]);
  });

  it("expires: a short grant stops working", async () => {
    const r = await grant(admin, { tenant_id: "globex", reason: "quick look", ttl_s: 1 });
    const g = r.body.grant as string;
    const ok = await mcp(h, admin, "tools/call", { name: "whoami", arguments: {} }, { [HEADER]: g });
    expect(toolResult(ok)).toMatchObject({ tenantId: "globex" });
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const late = await mcp(h, admin, "tools/call", { name: "whoami", arguments: {} }, { [HEADER]: g });
    expect(late.status).toBe(403);
    expect(late.body.error).toBe("forbidden");
    // ttl_s can shorten, never lengthen, the configured lifetime.
    const long = await grant(admin, { tenant_id: "globex", reason: "x", ttl_s: 10 ** 6 });
    expect(Date.parse(long.body.expires_at as string) - Date.now()).toBeLessThanOrEqual(900_000);
  });

  it("honours the tenant's status: a suspended tenant is not served even to an impersonating admin", async () => {
    const g = (await grant(admin, { tenant_id: "globex", reason: "why suspended?" })).body.grant as string;
    await h.app.tenants.suspend({ id: "test" }, "globex");
    try {
      const r = await mcp(h, admin, "tools/list", {}, { [HEADER]: g });
      expect(r.body.error).toBe("tenant_suspended");
    } finally {
      await h.app.tenants.resume({ id: "test" }, "globex");
    }
  });

  it("the admin_impersonate tool issues the same grants, to the calling admin only", async () => {
    const client = await h.connect(admin);
    const out = await client.callTool({
      name: "admin_impersonate",
      arguments: { tenant_id: "acme", reason: "via MCP" },
    });
    const g = (out.structuredContent as { grant: string }).grant;
    const me = toolResult(
      await mcp(h, admin, "tools/call", { name: "whoami", arguments: {} }, { [HEADER]: g }),
    );
    expect(me).toMatchObject({ tenantId: "acme", impersonatedBy: "admin:auth0|ops" });
    const other = await mcp(h, await h.adminToken({ sub: "auth0|x" }), "tools/list", {}, { [HEADER]: g });
    expect(other.status).toBe(403);
    const empty = await client.callTool({
      name: "admin_impersonate",
      arguments: { tenant_id: "acme", reason: " " },
    });
    expect(empty.isError).toBe(true);
  });

  it("a grant needs an admin identity to bind to", async () => {
    const r = await h.app.adminServices.impersonations
      .grant({ adminId: "", issuer: "" }, "acme", "x")
      .catch((e: unknown) => e);
    expect(r).toMatchObject({ code: "forbidden" });
  });
});
