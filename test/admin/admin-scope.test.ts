import { McpError } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { whoami } from "../../src/tools/demo/whoami.js";
import { adminApi, mcp, toolResult } from "./helpers.js";

/** Every admin route, with a body where it takes one. */
const ROUTES: [method: string, path: string, body?: unknown][] = [
  ["GET", "/tenants"],
  ["POST", "/tenants", { id: "evil", name: "Evil" }],
  ["GET", "/tenants/tenant-0"],
  ["PATCH", "/tenants/tenant-0", { name: "pwned" }],
  ["POST", "/tenants/tenant-0/suspend", {}],
  ["POST", "/tenants/tenant-0/resume", {}],
  ["POST", "/tenants/tenant-0/deprovision", {}],
  ["POST", "/purge", { now: true }],
  ["POST", "/restore", { archive: "x" }],
  ["GET", "/audit"],
  ["POST", "/impersonations", { tenant_id: "tenant-1", reason: "curious" }],
  ["GET", "/no-such-route"],
  ["DELETE", "/tenants/tenant-0"],
];

describe("global admin scope", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ tenants: 2, tools: [whoami] });
  });
  afterAll(async () => h?.close());

  it("a tenant token reaches no admin path: 403 insufficient_scope everywhere, nothing changes", async () => {
    const tokens = [
      h.tenants[0]!.token,
      // Even a token with other scopes, or one that names no tenant.
      await h.token("tenant-0", { scopes: ["read", "write", "admin"] }),
      await h.token(undefined, { scopes: ["admin:global:not"] }),
    ];
    for (const token of tokens) {
      for (const [method, path, body] of ROUTES) {
        const r = await adminApi(h, token, method, path, body);
        expect(r.status, `${method} ${path}`).toBe(403);
        expect(r.body.error, `${method} ${path}`).toBe("insufficient_scope");
        expect(r.headers.get("www-authenticate")).toContain('error="insufficient_scope"');
        expect(r.headers.get("www-authenticate")).toContain('scope="admin:global"');
      }
    }
    for (const [method, path, body] of ROUTES) {
      expect((await adminApi(h, undefined, method, path, body)).status, `${method} ${path}`).toBe(401);
      expect((await adminApi(h, "not-a-jwt", method, path, body)).status).toBe(401);
    }
    const t0 = await h.app.tenants.show("tenant-0");
    expect(t0).toMatchObject({ status: "active", name: "tenant-0" });
    await expect(h.app.tenants.show("evil")).rejects.toMatchObject({ code: "unknown_tenant" });
    const grants = await h.app.dbs.admin.query("SELECT 1 FROM tenantry_impersonations");
    expect(grants.rowCount).toBe(0);
  });

  it("tenants never see or call admin tools; the error is that of an unknown tool, word for word", async () => {
    const client = h.tenants[0]!.client;
    const names = (await client.listTools()).tools.map((t) => t.name);
    expect(names).toEqual(["whoami"]);
    const failure = async (name: string) => {
      try {
        await client.callTool({ name, arguments: { tenant_id: "tenant-1", reason: "x" } });
      } catch (error) {
        expect(error).toBeInstanceOf(McpError);
        return {
          code: (error as McpError).code,
          message: (error as McpError).message.replaceAll(name, "<name>"),
        };
      }
      throw new Error(`${name} did not fail`);
    };
    const unknown = await failure("admin_nonexistent");
    expect(await failure("admin_list_tenants")).toEqual(unknown);
    expect(await failure("admin_impersonate")).toEqual(unknown);
    const raw = await mcp(h, h.tenants[0]!.token, "tools/call", {
      name: "admin_list_tenants",
      arguments: {},
    });
    const rawUnknown = await mcp(h, h.tenants[0]!.token, "tools/call", {
      name: "zzzzzzzzzzzzzzzzzz",
      arguments: {},
    });
    expect(JSON.stringify(raw.body).replace("admin_list_tenants", "X")).toBe(
      JSON.stringify(rawUnknown.body).replace("zzzzzzzzzzzzzzzzzz", "X"),
    );
  });

  it("a global admin sees exactly the admin tools, and they work", async () => {
    const admin = await h.connect(await h.adminToken());
    const names = (await admin.listTools()).tools.map((t) => t.name).sort();
    expect(names).toEqual(["admin_impersonate", "admin_list_tenants"]);
    const list = await admin.callTool({ name: "admin_list_tenants", arguments: {} });
    const tenants = (list.structuredContent as { tenants: { id: string; status: string }[] }).tenants;
    expect(tenants.map((t) => t.id)).toEqual(["tenant-0", "tenant-1"]);
    // A tenant tool is not an admin tool: hidden from the global scope too.
    const raw = await mcp(h, await h.adminToken(), "tools/call", { name: "whoami", arguments: {} });
    expect((raw.body.error as { message: string }).message).toBe("Unknown tool: whoami");
  });

  it("admin REST: list, show, create, update, suspend, resume", async () => {
    const token = await h.adminToken({ sub: "auth0|ops" });
    const created = await adminApi(h, token, "POST", "/tenants", {
      id: "Org_AbC",
      name: "Mixed Case",
      trial_days: 5,
    });
    expect(created).toMatchObject({ status: 201, body: { id: "Org_AbC", status: "trial" } });
    expect((await adminApi(h, token, "GET", "/tenants/Org_AbC")).body).toMatchObject({ name: "Mixed Case" });
    expect((await adminApi(h, token, "GET", "/tenants/org_abc")).status).toBe(403); // unknown_tenant
    const converted = await adminApi(h, token, "PATCH", "/tenants/Org_AbC", { convert_trial: true });
    expect(converted.body).toMatchObject({ status: "active", expires_at: null });
    expect(
      (await adminApi(h, token, "POST", "/tenants/Org_AbC/suspend", { reason: "test" })).body,
    ).toMatchObject({
      status: "suspended",
    });
    expect((await adminApi(h, token, "POST", "/tenants/Org_AbC/resume")).body).toMatchObject({
      status: "active",
    });
    // What the tenant's state does not allow is a conflict (409), not a malformed request (400);
    // nothing is written, not even an audit event.
    for (const [method, path, body] of [
      ["POST", "/tenants/Org_AbC/resume", undefined], // not suspended
      ["PATCH", "/tenants/Org_AbC", { convert_trial: true }], // no longer on a trial
    ] as const) {
      const refused = await adminApi(h, token, method, path, body);
      expect(refused).toMatchObject({ status: 409, body: { error: "tenant_conflict" } });
    }
    await h.app.audit.flush();
    const log = await h.app.adminServices.auditLog.query({ tenant: "Org_AbC" });
    expect(log.map((e) => [e.action, e.userId])).toEqual([
      ["tenant.create", "admin:auth0|ops"],
      ["tenant.update", "admin:auth0|ops"],
      ["tenant.suspend", "admin:auth0|ops"],
      ["tenant.resume", "admin:auth0|ops"],
    ]);
    expect(log.every((e) => e.requestId !== null)).toBe(true);
    const asTenant = toolResult(
      await mcp(h, await h.token("Org_AbC"), "tools/call", { name: "whoami", arguments: {} }),
    );
    expect(asTenant).toMatchObject({ tenantId: "Org_AbC" });
  });
});
