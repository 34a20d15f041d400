import { readdir } from "node:fs/promises";
import { basename } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { mcp, toolResult } from "./helpers.js";

/**
 * Deprovision suspends a tenant, waits, archives it, then marks it deprovisioned. Other lifecycle
 * operations (another replica, the CLI, the admin API) may run meanwhile. Whatever they did must
 * stand: a tenant resumed mid-deprovision stays active with the writes it served, and two
 * deprovisions never both "succeed" with the second's archive overwriting the first's record.
 */
describe("deprovision racing other lifecycle operations", () => {
  let h: Harness;
  const actor = { id: "test" };

  beforeAll(async () => {
    h = await startHarness({
      tenants: [
        { id: "acme" },
        { id: "umbrella" },
        { id: "globex" },
        { id: "initech" },
        { id: "hooli" },
        { id: "wonka" },
        { id: "stark" },
        { id: "tyrell" },
      ],
      tools: demoTools,
      migrations: demoMigrations,
      // The settle wait of deprovision: long enough for a resume to land inside it.
      config: { auth: { multi_tenant: { registry_cache_ttl_ms: 1000 } } },
    });
  }, 60_000);
  afterAll(async () => h?.close());

  /** Archive directories (finished or partial) of `id` in archive_dir. */
  async function archivesOf(id: string): Promise<string[]> {
    const entries = await readdir(h.app.config.lifecycle.archive_dir).catch(() => [] as string[]);
    return entries.filter((e) => e.startsWith(`${id}-`) || e.startsWith(`.${id}-`)).sort();
  }

  async function note(id: string, title: string) {
    toolResult(
      await mcp(h, await h.token(id), "tools/call", {
        name: "notes_create",
        arguments: { title, body: "b" },
      }),
    );
  }

  async function titles(id: string): Promise<string[]> {
    const r = toolResult<{ notes: { title: string }[] }>(
      await mcp(h, await h.token(id), "tools/call", { name: "notes_list", arguments: {} }),
    );
    return r.notes.map((n) => n.title).sort();
  }

  const conflict = (e: unknown) => isTenantryError(e, "tenant_conflict");

  it("a resume during the archive wins: the tenant stays active and keeps what it wrote", async () => {
    await note("acme", "before");
    const objects = h.app.objects;
    const list = objects.list.bind(objects);
    // The archive lists objects after it has read the rows: resume and write right then.
    const spy = vi.spyOn(objects, "list").mockImplementationOnce(async (...args) => {
      await h.app.tenants.resume(actor, "acme");
      await note("acme", "after resume");
      return list(...args);
    });
    let error: unknown;
    try {
      await h.app.tenants.deprovision(actor, "acme");
    } catch (e) {
      error = e;
    } finally {
      spy.mockRestore();
    }

    expect(conflict(error)).toBe(true);
    const record = await h.app.tenants.show("acme");
    expect(record.status).toBe("active");
    expect(record.archivePath).toBeNull();
    expect(await archivesOf("acme")).toEqual([]); // no archive missing "after resume" left to restore
    expect(await titles("acme")).toEqual(["after resume", "before"]);

    const events = await h.app.adminServices.auditLog.query({ tenant: "acme", action: "tenant.deprovision" });
    expect(events.map((e) => e.outcome)).toEqual(["ok", "error"]);
    expect(events[1]?.errorCode).toBe("tenant_conflict");
  });

  it("an update during the archive wins: the tenant stays suspended, with the new settings", async () => {
    const objects = h.app.objects;
    const list = objects.list.bind(objects);
    const spy = vi.spyOn(objects, "list").mockImplementationOnce(async (...args) => {
      await h.app.tenants.update(actor, "wonka", { name: "Wonka Renamed" });
      return list(...args);
    });
    let error: unknown;
    try {
      await h.app.tenants.deprovision(actor, "wonka");
    } catch (e) {
      error = e;
    } finally {
      spy.mockRestore();
    }

    expect(conflict(error)).toBe(true);
    const record = await h.app.tenants.show("wonka");
    expect(record).toMatchObject({ status: "suspended", name: "Wonka Renamed", archivePath: null });
    expect(await archivesOf("wonka")).toEqual([]); // its manifest held the old name
  });

  /**
   * Deprovisions `id` with the registry write that marks it deprovisioned failing: before the write
   * reaches the database, or after (its reply lost). The deprovision must fail.
   */
  async function deprovisionFailingFinalWrite(id: string, when: "before" | "after") {
    const store = h.app.registry.store;
    const updateIf = store.updateIf.bind(store);
    const spy = vi.spyOn(store, "updateIf").mockImplementation(async (tenant, expect, update, ...rest) => {
      if (update.status !== "deprovisioned") return updateIf(tenant, expect, update, ...rest);
      if (when === "after") await updateIf(tenant, expect, update, ...rest);
      throw new Error("Connection terminated unexpectedly");
    });
    try {
      await expect(h.app.tenants.deprovision(actor, id)).rejects.toThrow(/terminated/);
    } finally {
      spy.mockRestore();
    }
  }

  it("a registry write that fails after the archive leaves no archive behind", async () => {
    await deprovisionFailingFinalWrite("stark", "before");
    expect(await h.app.tenants.show("stark")).toMatchObject({ status: "suspended", archivePath: null });
    expect(await archivesOf("stark")).toEqual([]); // nothing refers to it: not left on disk
    // deprovision can be run again, and leaves one archive
    const done = await h.app.tenants.deprovision(actor, "stark");
    expect(await archivesOf("stark")).toEqual([basename(done.archivePath ?? "")]);
  });

  it("a registry write whose reply is lost keeps the archive the record names", async () => {
    await deprovisionFailingFinalWrite("tyrell", "after");
    const record = await h.app.tenants.show("tyrell");
    expect(record.status).toBe("deprovisioned");
    expect(record.archivePath).toBeTruthy();
    expect(await archivesOf("tyrell")).toEqual([basename(record.archivePath ?? "")]);
  });

  it("a resume during the settle wait wins", async () => {
    const registry = h.app.registry;
    const invalidate = registry.invalidate.bind(registry);
    let resumed: Promise<unknown> | undefined;
    // deprovision invalidates the cache right after suspending, then waits: resume right then.
    const spy = vi.spyOn(registry, "invalidate").mockImplementation((id) => {
      invalidate(id);
      if (id === "umbrella" && !resumed) {
        resumed = h.app.tenants.resume(actor, "umbrella").then(() => note("umbrella", "after resume"));
      }
    });
    let error: unknown;
    try {
      await h.app.tenants.deprovision(actor, "umbrella");
    } catch (e) {
      error = e;
    } finally {
      spy.mockRestore();
    }
    await resumed;

    expect(conflict(error)).toBe(true);
    expect((await h.app.tenants.show("umbrella")).status).toBe("active");
    expect(await archivesOf("umbrella")).toEqual([]);
    expect(await titles("umbrella")).toEqual(["after resume"]);
  });

  it("two deprovisions at once: one archive, the one the record names", async () => {
    const results = await Promise.allSettled([
      h.app.tenants.deprovision(actor, "globex"),
      h.app.tenants.deprovision(actor, "globex"),
    ]);
    const done = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = results.flatMap((r) => (r.status === "rejected" ? [r.reason] : []));
    expect(done).toHaveLength(1);
    expect(failed.every(conflict)).toBe(true);

    const record = await h.app.tenants.show("globex");
    expect(record.status).toBe("deprovisioned");
    expect(record.archivePath).toBe(done[0]?.archivePath);
    expect(await archivesOf("globex")).toEqual([basename(record.archivePath!)]);
  });

  it("a second deprovision during the first's settle wait: one archive, the one the record names", async () => {
    const registry = h.app.registry;
    const invalidate = registry.invalidate.bind(registry);
    let second: Promise<PromiseSettledResult<unknown>> | undefined;
    const spy = vi.spyOn(registry, "invalidate").mockImplementation((id) => {
      invalidate(id);
      if (id !== "initech" || second) return;
      second = h.app.tenants.deprovision(actor, "initech").then(
        (value) => ({ status: "fulfilled", value }),
        (reason: unknown) => ({ status: "rejected", reason }),
      );
    });
    const first = await h.app.tenants.deprovision(actor, "initech").then(
      (value) => ({ status: "fulfilled" as const, value }),
      (reason: unknown) => ({ status: "rejected" as const, reason }),
    );
    spy.mockRestore();
    const results = [first, await second!];

    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect(results.filter((r) => r.status === "rejected").every((r) => conflict(r.reason))).toBe(true);
    const record = await h.app.tenants.show("initech");
    expect(record.status).toBe("deprovisioned");
    expect(await archivesOf("initech")).toEqual([basename(record.archivePath!)]);
  });

  it("a resume that read the tenant before a deprovision finished does not revive it", async () => {
    await h.app.tenants.suspend(actor, "hooli");
    const store = h.app.registry.store;
    const get = store.get.bind(store);
    const spy = vi.spyOn(store, "get").mockImplementationOnce(async (...args) => {
      const seen = await get(...args); // suspended, as resume checks
      await h.app.tenants.deprovision(actor, "hooli");
      return seen;
    });
    let error: unknown;
    try {
      await h.app.tenants.resume(actor, "hooli");
    } catch (e) {
      error = e;
    } finally {
      spy.mockRestore();
    }

    expect(conflict(error)).toBe(true);
    const record = await h.app.tenants.show("hooli");
    expect(record.status).toBe("deprovisioned");
    expect(
      (await mcp(h, await h.token("hooli"), "tools/call", { name: "notes_list", arguments: {} })).status,
    ).toBe(403);
    const events = await h.app.adminServices.auditLog.query({ tenant: "hooli", action: "tenant.resume" });
    expect(events.map((e) => e.outcome)).toEqual(["ok", "error"]);
  });
});
