import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { mcp, toolResult } from "./helpers.js";

/**
 * `create` resumes a tenant left in `provisioning`; `restore` also holds a tenant in `provisioning`
 * while it erases, re-provisions and re-inserts its data. Run on the same tenant at once (two
 * replicas, the CLI and the admin API), they must not both carry on: the tenant must never be made
 * active with part of the archive restored. One of them fails with `tenant_conflict`.
 */
describe.each(["row_level_security", "schema_per_tenant"] as const)(
  "create racing restore (%s)",
  (isolation) => {
    let h: Harness;
    const actor = { id: "test" };
    class Injected extends Error {}

    beforeAll(async () => {
      h = await startHarness({
        tenants: 0,
        tools: demoTools,
        migrations: demoMigrations,
        config: { auth: { multi_tenant: { isolation, registry_cache_ttl_ms: 10 } } },
      });
    }, 60_000);
    afterAll(async () => h?.close());

    const titles = async (id: string) => {
      const r = await mcp(h, await h.token(id), "tools/call", { name: "notes_list", arguments: {} });
      return toolResult<{ notes: { title: string }[] }>(r)
        .notes.map((n) => n.title)
        .sort();
    };

    /** A tenant with two notes, deprovisioned: its archive path. */
    async function archived(id: string): Promise<string> {
      await h.app.tenants.create(actor, { id, name: id });
      for (const title of ["one", "two"]) {
        toolResult(
          await mcp(h, await h.token(id), "tools/call", {
            name: "notes_create",
            arguments: { title, body: "b" },
          }),
        );
      }
      return (await h.app.tenants.deprovision(actor, id)).archivePath!;
    }

    it("a create that would resume a tenant a restore holds is refused; the restore completes", async () => {
      const id = "restoring-co";
      const archive = await archived(id);
      const objects = h.app.objects;
      const put = objects.put.bind(objects);
      let created: unknown;
      // The restore's first put is the storage marker, after it erased the tenant, before its data.
      const spy = vi.spyOn(objects, "put").mockImplementationOnce(async (...args) => {
        created = await h.app.tenants.create(actor, { id, name: id }).catch((e: unknown) => e);
        return put(...args);
      });
      try {
        await h.app.tenants.restore(actor, archive);
      } finally {
        spy.mockRestore();
      }
      expect(isTenantryError(created, "tenant_conflict")).toBe(true);
      expect(await h.app.tenants.show(id)).toMatchObject({ status: "active", provisioningStep: null });
      expect(await titles(id)).toEqual(["one", "two"]);
    });

    it("a restore that overtakes a resumed create wins; the create fails instead of activating it half-restored", async () => {
      const id = "resumed-co";
      const archive = await archived(id);
      await h.app.tenants.purge(actor, { now: true });
      // A create that crashed: the tenant is left in `provisioning`, and a re-run resumes it.
      await expect(
        h.app.tenants.create(
          actor,
          { id, name: id },
          {
            afterStep: async (s) => {
              if (s === "registered") throw new Injected();
            },
          },
        ),
      ).rejects.toBeInstanceOf(Injected);

      const objects = h.app.objects;
      const put = objects.put.bind(objects);
      let reached!: () => void;
      const atMarker = new Promise<void>((r) => {
        reached = r;
      });
      let release!: () => void;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      let restoring: Promise<unknown> | undefined;
      let spy: ReturnType<typeof vi.spyOn> | undefined;
      const created = h.app.tenants
        .create(
          actor,
          { id, name: id },
          {
            afterStep: async (s) => {
              if (s !== "storage") return;
              // The create has provisioned and is about to mark the tenant active. A restore starts
              // now and stops after erasing the tenant, before writing its data.
              spy = vi.spyOn(objects, "put").mockImplementationOnce(async (...args) => {
                reached();
                await gate;
                return put(...args);
              });
              restoring = h.app.tenants.restore(actor, archive);
              await atMarker;
            },
          },
        )
        .catch((e: unknown) => e);
      const createResult = await created;
      const stateDuringRestore = await h.app.tenants.show(id);
      release();
      try {
        await restoring;
      } finally {
        spy?.mockRestore();
      }

      expect(isTenantryError(createResult, "tenant_conflict")).toBe(true);
      expect(stateDuringRestore.status).toBe("provisioning"); // never served while the restore ran
      expect(await h.app.tenants.show(id)).toMatchObject({ status: "active", provisioningStep: null });
      expect(await titles(id)).toEqual(["one", "two"]);
      const events = await h.app.adminServices.auditLog.query({ tenant: id, action: "tenant.create" });
      expect(events.map((e) => e.outcome).slice(-2)).toEqual(["ok", "error"]);
    });
    it("a restore of a purged tenant that dies right after inserting it is not resumed by create", async () => {
      const id = "restore-crash";
      const archive = await archived(id);
      await h.app.tenants.purge(actor, { now: true });
      // The restore dies (a crash, a lost connection) at its first registry write after the insert.
      const store = h.app.registry.store;
      const spy = vi.spyOn(store, "updateIf").mockImplementationOnce(async () => {
        throw new Injected();
      });
      try {
        await expect(h.app.tenants.restore(actor, archive)).rejects.toBeInstanceOf(Injected);
      } finally {
        spy.mockRestore();
      }
      // The tenant is the restore's: a create must not make it active with none of its data.
      const created = await h.app.tenants.create(actor, { id, name: id }).catch((e: unknown) => e);
      expect(isTenantryError(created, "tenant_conflict")).toBe(true);
      expect((await h.app.tenants.show(id)).status).toBe("provisioning");
      // Running the restore again completes it.
      await h.app.tenants.restore(actor, archive);
      expect(await h.app.tenants.show(id)).toMatchObject({ status: "active", provisioningStep: null });
      expect(await titles(id)).toEqual(["one", "two"]);
    });
  },
);
