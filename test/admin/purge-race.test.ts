import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
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
});
