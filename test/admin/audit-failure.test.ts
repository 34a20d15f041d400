import { readdir } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AuditEvent } from "../../src/audit/audit-event.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { whoami } from "../../src/tools/demo/whoami.js";
import { adminApi, mcp } from "./helpers.js";

describe("an admin action whose audit write fails does not happen", () => {
  let h: Harness;
  let failing = false;
  let attempts: AuditEvent[] = [];
  beforeAll(async () => {
    h = await startHarness({
      tenants: [{ id: "acme" }, { id: "globex" }, { id: "initech", trialDays: 3 }],
      tools: [whoami],
      config: { auth: { multi_tenant: { registry_cache_ttl_ms: 10 } } },
    });
    await h.app.tenants.suspend({ id: "test" }, "globex");
    // Inject the failure at the sink: every synchronous (admin) write fails while `failing`.
    const sink = h.app.audit;
    const write = sink.write.bind(sink);
    sink.write = async (event) => {
      attempts.push(event);
      if (failing) throw new Error("disk full");
      return write(event);
    };
  });
  afterAll(async () => h?.close());

  const actions: [name: string, method: string, path: string, body?: unknown][] = [
    ["create", "POST", "/tenants", { id: "hooli", name: "Hooli" }],
    ["update", "PATCH", "/tenants/acme", { name: "Renamed", rate_limit: 1 }],
    ["convert", "PATCH", "/tenants/initech", { convert_trial: true }],
    ["suspend", "POST", "/tenants/acme/suspend", {}],
    ["resume", "POST", "/tenants/globex/resume", {}],
    ["deprovision", "POST", "/tenants/acme/deprovision", {}],
    ["impersonate", "POST", "/impersonations", { tenant_id: "acme", reason: "ticket 1" }],
  ];

  it.each(actions)(
    "%s: 503 audit_write_failed, and the registry is unchanged",
    async (_n, method, path, body) => {
      const before = (await h.app.tenants.list()).map((t) => ({ ...t, updatedAt: undefined }));
      attempts = [];
      failing = true;
      let r: Awaited<ReturnType<typeof adminApi>>;
      try {
        r = await adminApi(h, await h.adminToken(), method, path, body);
      } finally {
        failing = false;
      }
      expect(r.status).toBe(503);
      expect(r.body.error).toBe("audit_write_failed");
      expect(attempts).toHaveLength(1);
      const after = (await h.app.tenants.list()).map((t) => ({ ...t, updatedAt: undefined }));
      expect(after).toEqual(before);
      expect((await h.app.dbs.admin.query("SELECT 1 FROM tenantry_impersonations")).rowCount).toBe(0);
      const archived = await readdir(h.app.config.lifecycle.archive_dir).catch(() => []);
      expect(archived).toEqual([]);
    },
  );

  it("the tenants are served exactly as before", async () => {
    const acme = await mcp(h, h.tenant("acme").token, "tools/call", { name: "whoami", arguments: {} });
    expect(acme.status).toBe(200);
    const globex = await mcp(h, h.tenant("globex").token, "tools/list");
    expect(globex.body.error).toBe("tenant_suspended");
    expect((await h.app.tenants.show("initech")).status).toBe("trial");
  });

  it("purge and restore are refused too", async () => {
    await h.app.tenants.deprovision({ id: "test" }, "acme");
    const archive = (await h.app.tenants.show("acme")).archivePath!;
    failing = true;
    try {
      await expect(h.app.tenants.purge({ id: "test" }, { now: true })).resolves.toMatchObject({
        purged: [],
        failed: [{ id: "acme", code: "audit_write_failed" }],
      });
    } finally {
      failing = false;
    }
    // Unclaimed again: a restore is not kept waiting by a purge that did nothing.
    expect(await h.app.tenants.show("acme")).toMatchObject({
      status: "deprovisioned",
      provisioningStep: null,
    });
    await h.app.tenants.purge({ id: "test" }, { now: true });
    failing = true;
    try {
      await expect(h.app.tenants.restore({ id: "test" }, archive)).rejects.toMatchObject({
        code: "audit_write_failed",
      });
    } finally {
      failing = false;
    }
    await expect(h.app.tenants.show("acme")).rejects.toMatchObject({ code: "unknown_tenant" });
  });
});
