import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { adminApi } from "./helpers.js";

/**
 * PostgreSQL cannot store NUL in `text` or `jsonb`, nor a rate limit past its `integer`; a trial end
 * past the year 275760 is stored but cannot be read back as a date. Such admin input is refused up
 * front with 400 `invalid_argument`, and changes nothing, rather than failing inside the database
 * as 500 or leaving a record that breaks every listing.
 */
describe("admin input PostgreSQL cannot store", () => {
  let h: Harness;
  let admin: string;
  beforeAll(async () => {
    h = await startHarness({ tenants: [{ id: "acme", name: "Acme" }] });
    admin = await h.adminToken({ sub: "auth0|ops" });
  }, 60_000);
  afterAll(async () => h?.close());

  const attempts: [string, string, string, Record<string, unknown> | undefined][] = [
    ["create, name", "POST", "/tenants", { id: "nul-1", name: "a\u0000b" }],
    ["create, allowed tool", "POST", "/tenants", { id: "nul-2", name: "n", allowed_tools: ["a\u0000"] }],
    ["create, flag name", "POST", "/tenants", { id: "nul-3", name: "n", feature_flags: { "f\u0000": true } }],
    ["create, no name", "POST", "/tenants", { id: "nul-4" }],
    ["update, name", "PATCH", "/tenants/acme", { name: "a\u0000b" }],
    ["update, empty name", "PATCH", "/tenants/acme", { name: "  " }],
    ["update, flag value", "PATCH", "/tenants/acme", { feature_flags: { beta: "x\u0000" } }],
    ["update, allowed tool", "PATCH", "/tenants/acme", { allowed_tools: ["ok", "b\u0000d"] }],
    ["impersonation reason", "POST", "/impersonations", { tenant_id: "acme", reason: "x\u0000y" }],
    ["audit query action", "GET", "/audit?action=a%00b", undefined],
    ["create, trial past any date", "POST", "/tenants", { id: "big-1", name: "n", trial_days: 99_999_999 }],
    ["create, trial days past integer", "POST", "/tenants", { id: "big-2", name: "n", trial_days: 2 ** 31 }],
    ["create, rate limit past integer", "POST", "/tenants", { id: "big-3", name: "n", rate_limit: 2 ** 31 }],
    ["update, rate limit past integer", "PATCH", "/tenants/acme", { rate_limit: 2 ** 31 }],
  ];

  it.each(attempts)("%s: 400 invalid_argument", async (_what, method, path, body) => {
    const r = await adminApi(h, admin, method, path, body);
    expect(r.status).toBe(400);
    expect(r.body.error).toBe("invalid_argument");
  });

  it("the tenant service gives a missing name and an unstorable one the same rule", async () => {
    for (const name of [undefined, "a\u0000b", ""]) {
      const creating = h.app.tenants.create({ id: "test" }, { id: "nul-5", name: name as string });
      await expect(creating).rejects.toMatchObject({
        code: "invalid_argument",
        message: "--name must be 1-200 characters, without NUL",
      });
    }
  });

  it("and nothing changed", async () => {
    for (const id of ["nul-1", "nul-2", "nul-3", "nul-4", "nul-5", "big-1", "big-2", "big-3"]) {
      await expect(h.app.tenants.show(id)).rejects.toMatchObject({ code: "unknown_tenant" });
    }
    const acme = await h.app.tenants.show("acme");
    expect(acme).toMatchObject({ name: "Acme", config: { allowedTools: [], featureFlags: {} } });
    expect((await h.app.dbs.admin.query("SELECT 1 FROM tenantry_impersonations")).rowCount).toBe(0);
    const list = await adminApi(h, admin, "GET", "/tenants");
    expect(list.status).toBe(200);
    expect((list.body.tenants as { id: string }[]).map((t) => t.id)).toEqual(["acme"]);
  });
});
