import { readdir } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { adminApi, mcp, toolResult } from "./helpers.js";

/**
 * Deprovisioning archives every object of the tenant; a read that fails part-way (a disk error, a
 * connection dropped mid-body, from any ObjectStore) fails the deprovision with
 * `backend_unavailable` (503, not 500 internal), without the backend's message (a server path),
 * leaves no partial archive, and leaves the tenant suspended, so that deprovision can be run again.
 */
describe("deprovision when an object read fails part-way", () => {
  let h: Harness;
  const ID = "acme";
  const secretPath = "/srv/tenantry/objects/t/secret/doc";

  beforeAll(async () => {
    h = await startHarness({
      tenants: [{ id: ID }],
      tools: demoTools,
      migrations: demoMigrations,
      config: { auth: { multi_tenant: { registry_cache_ttl_ms: 10 } } },
    });
  }, 60_000);
  afterAll(async () => h?.close());

  const archives = async () =>
    (await readdir(h.app.config.lifecycle.archive_dir).catch(() => [] as string[])).filter((e) =>
      e.includes(ID),
    );

  /** The next streamed reads yield one chunk, then fail with a raw error naming a server path. */
  function failingReads() {
    const objects = h.app.objects;
    const raw = Object.assign(new Error(`EIO: i/o error, read '${secretPath}'`), { code: "EIO" });
    const spy = vi.spyOn(objects, "getStream").mockImplementation(async () =>
      (async function* () {
        yield new Uint8Array([1, 2, 3]);
        throw raw;
      })(),
    );
    return { raw, restore: () => spy.mockRestore() };
  }

  it("fails with backend_unavailable, removes the partial archive, keeps the tenant suspended; a re-run completes", async () => {
    expect(h.app.objects.getStream).toBeTypeOf("function"); // the streaming path is what is tested
    toolResult(
      await mcp(h, await h.token(ID), "tools/call", {
        name: "documents_put",
        arguments: { key: "doc", content: "x".repeat(1000) },
      }),
    );

    const failing = failingReads();
    let error: unknown;
    let api: Awaited<ReturnType<typeof adminApi>>;
    try {
      error = await h.app.tenants.deprovision({ id: "test" }, ID).catch((e: unknown) => e);
      api = await adminApi(h, await h.adminToken({ sub: "ops" }), "POST", `/tenants/${ID}/deprovision`);
    } finally {
      failing.restore();
    }

    expect(isTenantryError(error, "backend_unavailable")).toBe(true);
    expect((error as Error).cause).toBe(failing.raw);
    expect((error as Error).message).not.toContain(secretPath);
    expect(api.status).toBe(503);
    expect(api.body.error).toBe("backend_unavailable");
    expect(JSON.stringify(api.body)).not.toContain(secretPath);
    expect(await archives()).toEqual([]); // no partial archive left behind
    expect((await h.app.tenants.show(ID)).status).toBe("suspended");

    const done = await h.app.tenants.deprovision({ id: "test" }, ID);
    expect(done.status).toBe("deprovisioned");
    expect(await archives()).toHaveLength(1);
  });
});
