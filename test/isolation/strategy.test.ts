import { describe, expect, it } from "vitest";
import { enterTenant } from "../../src/isolation/strategy.js";
import type { TenantRecord } from "../../src/tenancy/tenant.js";

const record = (id: string, key = "1a") => ({ id, key }) as unknown as TenantRecord;

describe("enterTenant", () => {
  it("binds tenant, role and search path in one statement sent with BEGIN", () => {
    const enter = enterTenant("schema_per_tenant", record("org_AbC:1.x-y"), "tenantry_runtime");
    expect(enter.prelude).toBe(
      "SELECT set_config('app.tenant_id', 'org_AbC:1.x-y', true), set_config('role', 'tenantry_runtime', true), set_config('search_path', '\"tenant_1a\"', true)",
    );
    expect(enterTenant("row_level_security", record("acme"), undefined).prelude).toBe(
      "SELECT set_config('app.tenant_id', 'acme', true)",
    );
  });

  it("falls back to bound parameters when a value is not literal-safe (attack)", async () => {
    const enter = enterTenant("row_level_security", record("acme"), "x', true); DROP TABLE notes; --");
    expect(enter.prelude).toBeUndefined();
    const seen: unknown[][] = [];
    await enter({
      async query(_sql: string, params?: readonly unknown[]) {
        seen.push([...(params ?? [])]);
        return { rows: [], rowCount: 0 };
      },
    });
    expect(seen).toEqual([["acme", "x', true); DROP TABLE notes; --"]]);
  });

  it("refuses a record whose id is not a valid tenant id", () => {
    expect(() => enterTenant("row_level_security", record("a'b"), undefined)).toThrow();
  });
});
