import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { markerKey, PROVISIONING_STEPS } from "../../src/admin/tenant-service.js";
import { schemaNameForKey } from "../../src/isolation/names.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { mcp, toolResult } from "./helpers.js";

const ACTOR = { id: "test" };
class Injected extends Error {}

describe.each(["row_level_security", "schema_per_tenant"] as const)("provisioning (%s)", (isolation) => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      tenants: 0,
      tools: demoTools,
      migrations: demoMigrations,
      config: { auth: { multi_tenant: { isolation, registry_cache_ttl_ms: 10 } } },
    });
  });
  afterAll(async () => h?.close());

  async function consistentAndServed(id: string) {
    const record = await h.app.tenants.show(id);
    expect(record).toMatchObject({ status: "active", provisioningStep: null });
    expect(await h.app.objects.get(markerKey(record.key))).toBeDefined();
    if (isolation === "schema_per_tenant") {
      const s = await h.app.dbs.admin.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [
        schemaNameForKey(record.key),
      ]);
      expect(s.rowCount).toBe(1);
    }
    const token = await h.token(id);
    const note = toolResult(
      await mcp(h, token, "tools/call", { name: "notes_create", arguments: { title: "t", body: "b" } }),
    );
    expect(note).toHaveProperty("note.title", "t");
    const list = toolResult<{ notes: unknown[] }>(
      await mcp(h, token, "tools/call", { name: "notes_list", arguments: {} }),
    );
    expect(list.notes).toHaveLength(1);
  }

  it.each(PROVISIONING_STEPS)(
    "a failure after step %s leaves an unserved tenant; a re-run completes it",
    async (step) => {
      const id = `fail-${step}`;
      const hook = async (s: string) => {
        if (s === step) throw new Injected(`crash after ${s}`);
      };
      await expect(h.app.tenants.create(ACTOR, { id, name: id }, { afterStep: hook })).rejects.toBeInstanceOf(
        Injected,
      );
      const half = await h.app.tenants.show(id);
      expect(half.status).toBe("provisioning");
      // Never served while provisioning: not by the MCP endpoint, not by impersonation.
      const r = await mcp(h, await h.token(id), "tools/list");
      expect(r.status).toBe(403);
      expect(r.body.error).toBe("unknown_tenant");
      await expect(
        h.app.adminServices.impersonations.grant({ adminId: "ops", issuer: "i" }, id, "look"),
      ).rejects.toMatchObject({ code: "tenant_conflict" });
      await expect(h.app.tenants.suspend(ACTOR, id)).rejects.toMatchObject({ code: "tenant_conflict" });

      const steps: string[] = [];
      const done = await h.app.tenants.create(
        ACTOR,
        { id, name: id },
        { afterStep: async (s) => void steps.push(s) },
      );
      expect(steps).toEqual([...PROVISIONING_STEPS]);
      expect(done.key).toBe(half.key); // the same registry row, resumed
      await consistentAndServed(id);
      await expect(h.app.tenants.create(ACTOR, { id, name: id })).rejects.toMatchObject({
        code: "tenant_exists",
      });
    },
  );

  it("a failure inside a step (the database) is resumed the same way", async () => {
    const id = "fail-inside";
    const isolationStage = h.app.isolation;
    const original = isolationStage.provisionTenant.bind(isolationStage);
    isolationStage.provisionTenant = async () => {
      throw new Injected("database down");
    };
    try {
      await expect(h.app.tenants.create(ACTOR, { id, name: id })).rejects.toBeInstanceOf(Injected);
    } finally {
      isolationStage.provisionTenant = original;
    }
    expect((await h.app.tenants.show(id)).status).toBe("provisioning");
    await h.app.tenants.create(ACTOR, { id, name: id });
    await consistentAndServed(id);
  });

  it("trials: --trial-days gives a trial with an end; expired trials are refused; convertTrial makes it active", async () => {
    const t = await h.app.tenants.create(ACTOR, { id: "trial-co", name: "Trial", trialDays: 14 });
    expect(t.status).toBe("trial");
    const days = (t.expiresAt!.getTime() - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(13.9);
    expect(days).toBeLessThanOrEqual(14);
    const token = await h.token("trial-co");
    expect((await mcp(h, token, "tools/list")).status).toBe(200);

    // The trial ends: refused with trial_expired.
    await h.app.dbs.admin.query(
      "UPDATE tenantry_tenants SET expires_at = now() - interval '1 minute' WHERE id = $1",
      ["trial-co"],
    );
    h.app.registry.invalidate("trial-co");
    const expired = await mcp(h, token, "tools/list");
    expect(expired.status).toBe(403);
    expect(expired.body.error).toBe("trial_expired");

    const converted = await h.app.tenants.update(ACTOR, "trial-co", { convertTrial: true });
    expect(converted).toMatchObject({ status: "active", expiresAt: null });
    expect((await mcp(h, token, "tools/list")).status).toBe(200);
    await expect(h.app.tenants.update(ACTOR, "trial-co", { convertTrial: true })).rejects.toMatchObject({
      code: "tenant_conflict",
    });
    await expect(h.app.tenants.update(ACTOR, "trial-co", { status: "active" })).rejects.toMatchObject({
      code: "invalid_argument",
    });
    await h.app.audit.flush();
    const log = await h.app.adminServices.auditLog.query({ tenant: "trial-co", action: "tenant.update" });
    expect(log).toHaveLength(1);
    expect(log[0]!.details).toMatchObject({ status: "active", expiresAt: null });
  });
});
