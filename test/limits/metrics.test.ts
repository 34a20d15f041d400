import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { OTHER_TENANT_LABEL, RateLimitMetrics } from "../../src/limits/metrics.js";
import { assertTenantId } from "../../src/tenancy/tenant-id.js";

async function values(registry: Registry, name: string): Promise<Map<string, number>> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`${name} is not registered`);
  const { values: rows } = await metric.get();
  return new Map(rows.map((row) => [String(row.labels.tenant), row.value]));
}

describe("RateLimitMetrics", () => {
  it("counts allowed and limited decisions per tenant", async () => {
    const registry = new Registry();
    const metrics = new RateLimitMetrics({ registry });
    metrics.recordDecision("acme", true);
    metrics.recordDecision("acme", true);
    metrics.recordDecision("acme", false);
    metrics.recordDecision("globex", false);
    expect(await values(registry, "tenantry_rate_limit_allowed_total")).toEqual(new Map([["acme", 2]]));
    expect(await values(registry, "tenantry_rate_limit_limited_total")).toEqual(
      new Map([
        ["acme", 1],
        ["globex", 1],
      ]),
    );
    expect(await registry.metrics()).toContain('tenantry_rate_limit_allowed_total{tenant="acme"} 2');
  });

  it("a tenant whose id reads like the overflow label keeps its own series", async () => {
    const registry = new Registry();
    const metrics = new RateLimitMetrics({ registry, maxTenantLabels: 1 });
    metrics.recordDecision("_other", true);
    metrics.recordDecision("other", true);
    metrics.recordDecision("t1", true);
    const allowed = await values(registry, "tenantry_rate_limit_allowed_total");
    expect(allowed.get("_other")).toBe(1);
    expect(allowed.get(OTHER_TENANT_LABEL)).toBe(2);
    expect(() => assertTenantId(OTHER_TENANT_LABEL)).toThrow();
  });

  it("bounds the tenant label: tenants past the budget count as (other)", async () => {
    const registry = new Registry();
    const metrics = new RateLimitMetrics({ registry, maxTenantLabels: 1000 });
    for (let i = 0; i < 1500; i++) metrics.recordDecision(`t${i}`, true);
    metrics.recordDecision("t0", true);
    const allowed = await values(registry, "tenantry_rate_limit_allowed_total");
    expect(allowed.size).toBe(1001);
    expect(allowed.get("(other)")).toBe(500);
    expect(allowed.get("t0")).toBe(2);
    expect(allowed.has("t1000")).toBe(false);
  });

  it("reuses the counters already in a registry", async () => {
    const registry = new Registry();
    new RateLimitMetrics({ registry }).recordDecision("acme", true);
    new RateLimitMetrics({ registry }).recordDecision("acme", true);
    expect((await values(registry, "tenantry_rate_limit_allowed_total")).get("acme")).toBe(2);
  });
});
