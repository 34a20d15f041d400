import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { markerKey } from "../../src/admin/tenant-service.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { mcp, toolResult } from "./helpers.js";

/**
 * A purge works through the deprovisioned tenants it listed at its start, which may take a while
 * (the purge job runs on every replica, unattended). A tenant restored meanwhile is active again:
 * the purge must leave it, its data and its registry row alone.
 */
describe("purge and a restore that overtakes it", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      tenants: [{ id: "acme" }, { id: "globex" }],
      tools: demoTools,
      migrations: demoMigrations,
      config: { auth: { multi_tenant: { registry_cache_ttl_ms: 50 } } },
    });
  }, 60_000);
  afterAll(async () => h?.close());

  it("a tenant restored after the purge listed it is not purged", async () => {
    const token = await h.token("acme");
    toolResult(
      await mcp(h, token, "tools/call", { name: "notes_create", arguments: { title: "kept", body: "b" } }),
    );
    const dep = await h.app.tenants.deprovision({ id: "test" }, "acme");
    await h.app.tenants.deprovision({ id: "test" }, "globex");

    const store = h.app.registry.store;
    const list = store.list.bind(store);
    const spy = vi.spyOn(store, "list").mockImplementationOnce(async (options) => {
      const page = await list(options);
      await h.app.tenants.restore({ id: "test" }, dep.archivePath!); // while the purge holds its list
      return page;
    });
    let result: Awaited<ReturnType<typeof h.app.tenants.purge>>;
    try {
      result = await h.app.tenants.purge({ id: "test" }, { now: true });
    } finally {
      spy.mockRestore();
    }

    expect(result.purged.map((p) => p.id)).toEqual(["globex"]);
    expect((await h.app.tenants.show("acme")).status).toBe("active");
    const notes = toolResult<{ notes: { title: string }[] }>(
      await mcp(h, token, "tools/call", { name: "notes_list", arguments: {} }),
    );
    expect(notes.notes.map((n) => n.title)).toEqual(["kept"]);
  });

  /*
   * Purge and restore both erase the tenant's data, and restore writes it again: a restore that
   * overlaps a purge must either win (the purge leaves the tenant alone) or fail before it writes
   * anything (the purge completes), never report success and then be erased or unregistered.
   */
  const titles = async (id: string) => {
    const r = await mcp(h, await h.token(id), "tools/call", { name: "notes_list", arguments: {} });
    return toolResult<{ notes: { title: string }[] }>(r).notes.map((n) => n.title);
  };
  const purgeEvents = async (id: string) =>
    (await h.app.adminServices.auditLog.query({ tenant: id, action: "tenant.purge" })).map((e) => e.outcome);
  /** A new tenant with one note, deprovisioned. */
  const deprovisioned = async (id: string) => {
    await h.app.tenants.create({ id: "test" }, { id, name: id });
    toolResult(
      await mcp(h, await h.token(id), "tools/call", {
        name: "notes_create",
        arguments: { title: "kept", body: "b" },
      }),
    );
    return h.app.tenants.deprovision({ id: "test" }, id);
  };

  it("a restore that starts after the purge read the tenant, before it erases: the restore wins, the purge leaves it", async () => {
    const ID = "initech";
    const dep = await deprovisioned(ID);
    const store = h.app.registry.store;
    const get = store.get.bind(store);
    let restored: unknown;
    const spy = vi.spyOn(store, "get").mockImplementationOnce(async (id, q) => {
      const record = await get(id, q); // the purge's read: the tenant is deprovisioned
      restored = await h.app.tenants.restore({ id: "test" }, dep.archivePath!).catch((e: unknown) => e);
      return record;
    });
    let result: Awaited<ReturnType<typeof h.app.tenants.purge>>;
    try {
      result = await h.app.tenants.purge({ id: "test" }, { now: true });
    } finally {
      spy.mockRestore();
    }
    expect(restored).toMatchObject({ id: ID, status: "active" });
    expect(result).toEqual({ purged: [], failed: [] });
    expect((await h.app.tenants.show(ID)).status).toBe("active");
    expect(await titles(ID)).toEqual(["kept"]); // not erased after the restore wrote it
    expect(await purgeEvents(ID)).toEqual([]); // the purge did nothing, and says nothing
  });

  it("a restore that starts while the purge erases fails before writing; the purge completes; the restore then succeeds", async () => {
    const ID = "hooli";
    const dep = await deprovisioned(ID);
    const objects = h.app.objects;
    const del = objects.delete.bind(objects);
    let restoring: unknown;
    const spy = vi.spyOn(objects, "delete").mockImplementationOnce(async (key) => {
      const deleted = await del(key); // the purge's last erase step: the storage marker
      expect(key).toBe(markerKey(dep.key));
      restoring = await h.app.tenants.restore({ id: "test" }, dep.archivePath!).catch((e: unknown) => e);
      return deleted;
    });
    let result: Awaited<ReturnType<typeof h.app.tenants.purge>>;
    try {
      result = await h.app.tenants.purge({ id: "test" }, { now: true });
    } finally {
      spy.mockRestore();
    }
    expect(restoring).toMatchObject({ name: "TenantryError", code: "tenant_conflict" });
    expect((restoring as Error).message).toMatch(/being purged/);
    expect(result.purged.map((p) => p.id)).toEqual([ID]);
    await expect(h.app.tenants.show(ID)).rejects.toMatchObject({ code: "unknown_tenant" });
    expect(await purgeEvents(ID)).toEqual(["ok"]);
    const restores = await h.app.adminServices.auditLog.query({ tenant: ID, action: "tenant.restore" });
    expect(restores).toEqual([]); // refused before it was attempted

    const again = await h.app.tenants.restore({ id: "test" }, dep.archivePath!);
    expect(again).toMatchObject({ id: ID, status: "active" });
    expect(again.key).not.toBe(dep.key);
    expect(await titles(ID)).toEqual(["kept"]);
  });
});
