import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AuditEvent } from "../../src/audit/audit-event.js";
import { jsonlAuditReader, normaliseAuditQuery, parseSince } from "../../src/audit/audit-query.js";
import { auditEventToJson } from "../../src/audit/sinks.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { whoami } from "../../src/tools/demo/whoami.js";
import { adminApi, mcp } from "../admin/helpers.js";

const ev = (i: number, tenantId: string, action = "tools/call"): AuditEvent => ({
  at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
  kind: "request",
  tenantId,
  userId: "u",
  impersonatedBy: null,
  action,
  tool: "whoami",
  outcome: "ok",
  errorCode: null,
  latencyMs: 1.5,
  requestId: `r${i}`,
  replica: "x",
  details: null,
});

describe("query validation", () => {
  it("refuses bad ids, dates and limits with invalid_argument codes", () => {
    expect(() => normaliseAuditQuery({ tenant: "a/b" })).toThrow(
      expect.objectContaining({ code: "invalid_tenant_id" }),
    );
    expect(() => normaliseAuditQuery({ limit: 0 })).toThrow(
      expect.objectContaining({ code: "invalid_argument" }),
    );
    expect(() => normaliseAuditQuery({ limit: 10_001 })).toThrow(
      expect.objectContaining({ code: "invalid_argument" }),
    );
    expect(() => parseSince("yesterday")).toThrow(expect.objectContaining({ code: "invalid_argument" }));
    expect(parseSince("2026-01-02").toISOString()).toBe("2026-01-02T00:00:00.000Z");
    expect(normaliseAuditQuery({}).limit).toBe(100);
  });
});

describe("JSON lines reader", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "tenantry-audit-"));
    const lines = Array.from({ length: 30 }, (_, i) =>
      JSON.stringify(auditEventToJson(ev(i, i % 2 ? "b" : "a"))),
    );
    // A torn last line (crash mid-write) is skipped, not fatal.
    await writeFile(join(dir, "audit.jsonl"), `${lines.join("\n")}\n{"at":"2026-`);
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("filters by tenant, since and action, and keeps the most recent `limit`, oldest first", async () => {
    const r = jsonlAuditReader(join(dir, "audit.jsonl"));
    const a = await r.query({ tenant: "a", limit: 3 });
    expect(a.map((e) => e.requestId)).toEqual(["r24", "r26", "r28"]);
    const since = await r.query({ since: new Date(Date.UTC(2026, 0, 1, 0, 0, 27)) });
    expect(since.map((e) => e.requestId)).toEqual(["r27", "r28", "r29"]);
    expect(await r.query({ action: "tenant.suspend" })).toEqual([]);
    expect((await r.query({}))[0]).toEqual(ev(0, "a"));
    expect(await jsonlAuditReader(join(dir, "missing.jsonl")).query({})).toEqual([]);
  });
});

describe("GET /admin/api/audit", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ tenants: 2, tools: [whoami] });
    for (const t of h.tenants) await mcp(h, t.token, "tools/call", { name: "whoami", arguments: {} });
    await h.app.tenants.suspend({ id: "ops" }, "tenant-1", "billing");
    await h.app.audit.flush();
  });
  afterAll(async () => h?.close());

  it("reads the log with filters, in the documented JSON form", async () => {
    const admin = await h.adminToken();
    const r = await adminApi(h, admin, "GET", "/audit?tenant=tenant-1&action=tenant.suspend");
    expect(r.status).toBe(200);
    const events = r.body.events as Record<string, unknown>[];
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      kind: "admin",
      tenant_id: "tenant-1",
      user_id: "ops",
      action: "tenant.suspend",
      outcome: "ok",
      details: { reason: "billing", previous: "active" },
    });
    expect(Object.keys(events[0]!).sort()).toEqual(
      [
        "at",
        "kind",
        "tenant_id",
        "user_id",
        "impersonated_by",
        "action",
        "tool",
        "outcome",
        "error_code",
        "latency_ms",
        "request_id",
        "replica",
        "details",
      ].sort(),
    );
    const calls = await adminApi(
      h,
      admin,
      "GET",
      `/audit?action=tools/call&since=${new Date(0).toISOString()}&limit=1`,
    );
    expect(calls.body.events).toHaveLength(1);
    expect(await adminApi(h, admin, "GET", "/audit?since=soon")).toMatchObject({
      status: 400,
      body: { error: "invalid_argument" },
    });
    expect(await adminApi(h, admin, "GET", "/audit?limit=-3")).toMatchObject({ status: 400 });
    expect(await adminApi(h, admin, "GET", "/audit?tenant=..%2Fx")).toMatchObject({ status: 400 });
  });
});
