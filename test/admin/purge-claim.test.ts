import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { markerKey, type TenantService, type TenantServiceDeps } from "../../src/admin/tenant-service.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";
import { mcp, otherReplica, toolResult } from "./helpers.js";

const pgUp = await serviceGate("postgres");
const HOUR = 3_600_000;

/**
 * Every replica runs the purge job; a purge claims a tenant before erasing it, and a claim is taken
 * over only once it is old enough to have been left by a purge that died. Its age is the
 * database's: a replica whose clock is skewed from PostgreSQL's must neither take over a live
 * claim nor leave a dead one for ever.
 */
describe.each([
  { backend: "PGlite", postgres: false },
  { backend: "PostgreSQL", postgres: true },
])("a purge's claim and skewed clocks ($backend)", ({ postgres }) => {
  describe.skipIf(postgres && !pgUp)("purge claim", () => {
    let db: TestDatabase | undefined;
    let h: Harness;
    const actor = { id: "test" };

    beforeAll(async () => {
      db = postgres ? await createTestDatabase() : undefined;
      h = await startHarness({
        tenants: 0,
        tools: demoTools,
        migrations: demoMigrations,
        config: {
          ...(db ? { database: { url: db.runtimeUrl, admin_url: db.adminUrl } } : {}),
          auth: { multi_tenant: { registry_cache_ttl_ms: 10 } },
        },
      });
    }, 60_000);
    afterAll(async () => {
      await h?.close();
      await db?.drop();
    });

    /** Another replica's service on the same databases, with its own leases, claims and clock. */
    const replica = (deps: Partial<TenantServiceDeps>) => otherReplica(h, deps);

    /** A new tenant with one note, deprovisioned. */
    async function deprovisioned(id: string) {
      await h.app.tenants.create(actor, { id, name: id });
      toolResult(
        await mcp(h, await h.token(id), "tools/call", {
          name: "notes_create",
          arguments: { title: "kept", body: "b" },
        }),
      );
      return h.app.tenants.deprovision(actor, id);
    }
    const purgeEvents = async (id: string) =>
      (await h.app.adminServices.auditLog.query({ tenant: id, action: "tenant.purge" })).map(
        (e) => e.outcome,
      );

    it("a replica whose clock runs an hour ahead does not take over a live purge", async () => {
      const id = "live-claim";
      const dep = await deprovisioned(id);
      const objects = h.app.objects;
      const del = objects.delete.bind(objects);
      let ahead: unknown;
      // The live purge has claimed the tenant and is erasing it (its last step: the storage marker).
      const spy = vi.spyOn(objects, "delete").mockImplementationOnce(async (key) => {
        expect(key).toBe(markerKey(dep.key));
        expect(await h.app.tenants.show(id)).toMatchObject({ provisioningStep: "purging" });
        ahead = await replica({ now: () => Date.now() + HOUR }).purge(actor, { now: true });
        return del(key);
      });
      let live: Awaited<ReturnType<TenantService["purge"]>>;
      try {
        live = await h.app.tenants.purge(actor, { now: true });
      } finally {
        spy.mockRestore();
      }
      expect(ahead).toEqual({ purged: [], failed: [] }); // left to the live purge
      expect(live.purged.map((p) => p.id)).toEqual([id]);
      expect(live.failed).toEqual([]);
      expect(await purgeEvents(id)).toEqual(["ok"]); // one purge, not two
    });

    it("a live purge slower than its claim's age renews it: no other purge takes it over", async () => {
      const id = "slow-claim";
      const dep = await deprovisioned(id);
      const CLAIM = 500; // renewed every 50 ms
      const objects = h.app.objects;
      const del = objects.delete.bind(objects);
      let other: unknown;
      // The live purge is erasing (its last step, the storage marker) for three times its claim's age.
      const spy = vi.spyOn(objects, "delete").mockImplementationOnce(async (key) => {
        expect(key).toBe(markerKey(dep.key));
        await new Promise((r) => setTimeout(r, 3 * CLAIM));
        other = await replica({ purgeClaimMs: CLAIM }).purge(actor, { now: true });
        return del(key);
      });
      let slow: Awaited<ReturnType<TenantService["purge"]>>;
      try {
        slow = await replica({ purgeClaimMs: CLAIM }).purge(actor, { now: true });
      } finally {
        spy.mockRestore();
      }
      expect(other).toEqual({ purged: [], failed: [] }); // left to the live purge
      expect(slow.purged.map((p) => p.id)).toEqual([id]);
      expect(slow.failed).toEqual([]);
      expect(await purgeEvents(id)).toEqual(["ok"]); // one purge, not two
    });

    it("a replica whose clock runs an hour behind takes over a claim left by a purge that died", async () => {
      const id = "dead-claim";
      const dep = await deprovisioned(id);
      // A purge claimed it and died before erasing anything.
      await h.app.registry.store.updateIf(
        id,
        { version: dep.version, status: "deprovisioned" },
        { provisioningStep: "purging" },
      );
      const behind = replica({ now: () => Date.now() - HOUR, purgeClaimMs: 500 });
      expect(await behind.purge(actor)).toEqual({ purged: [], failed: [] }); // still young
      await new Promise((r) => setTimeout(r, 700));
      const result = await behind.purge(actor); // without --now: a claim is due whatever purge_after says
      expect(result.purged.map((p) => p.id)).toEqual([id]);
      await expect(h.app.tenants.show(id)).rejects.toMatchObject({ code: "unknown_tenant" });
    });
  });
});
