import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import type { AuditEvent } from "../../src/audit/audit-event.js";
import { jsonlAuditReader } from "../../src/audit/audit-query.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { defineTool } from "../../src/tools/define-tool.js";
import { whoami } from "../../src/tools/demo/whoami.js";
import { counterTool, mcp } from "../admin/helpers.js";

const TENANTS = 3;

async function events(h: Harness, prefix: string): Promise<AuditEvent[]> {
  await h.app.audit.flush();
  const all = await h.app.adminServices.auditLog.query({ limit: 10_000 });
  return all.filter((e) => e.requestId?.startsWith(prefix));
}

describe("every MCP request is one audit event", () => {
  let h: Harness;
  const counter = counterTool();
  beforeAll(async () => {
    h = await startHarness({
      tenants: TENANTS,
      tools: [whoami, counter.tool],
      config: { audit: { flush_interval_ms: 5, batch_size: 7, queue_size: 200 } },
    });
  });
  afterAll(async () => h?.close());

  it("N requests across tenants give exactly N request events, each with its tenant", async () => {
    const N = 90;
    const sent = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const t = h.tenants[i % TENANTS]!;
        const r = await mcp(
          h,
          t.token,
          i % 3 === 0 ? "tools/list" : "tools/call",
          i % 3 === 0 ? {} : { name: "whoami", arguments: {} },
          { "X-Request-Id": `load-${i}` },
        );
        expect(r.status).toBe(200);
        return { id: `load-${i}`, tenant: t.id, method: i % 3 === 0 ? "tools/list" : "tools/call" };
      }),
    );
    const got = await events(h, "load-");
    expect(got).toHaveLength(N);
    const byId = new Map(got.map((e) => [e.requestId, e]));
    expect(byId.size).toBe(N);
    for (const s of sent) {
      const e = byId.get(s.id)!;
      expect(e).toMatchObject({
        kind: "request",
        tenantId: s.tenant,
        userId: `auth0|user-of-${s.tenant}`,
        action: s.method,
        tool: s.method === "tools/call" ? "whoami" : null,
        outcome: "ok",
        errorCode: null,
        impersonatedBy: null,
        replica: h.app.ids.replica,
      });
      expect(e.latencyMs).toBeGreaterThanOrEqual(0);
    }
  });

  it("records denials before dispatch, with whoever the token named", async () => {
    const unknown = await h.token("no-such-tenant");
    await h.app.tenants.suspend({ id: "test" }, "tenant-2");
    try {
      const cases = [
        { id: "deny-notoken", token: undefined, status: 401, code: "invalid_token", tenant: null },
        { id: "deny-badtoken", token: "garbage", status: 401, code: "invalid_token", tenant: null },
        { id: "deny-unknown", token: unknown, status: 403, code: "unknown_tenant", tenant: "no-such-tenant" },
        {
          id: "deny-suspended",
          token: h.tenants[2]!.token,
          status: 403,
          code: "tenant_suspended",
          tenant: "tenant-2",
        },
      ];
      for (const c of cases) {
        const r = await mcp(h, c.token, "tools/list", {}, { "X-Request-Id": c.id });
        expect(r.status).toBe(c.status);
        expect(r.body.error).toBe(c.code);
      }
      const tool = await mcp(
        h,
        h.tenants[0]!.token,
        "tools/call",
        { name: "nope", arguments: {} },
        {
          "X-Request-Id": "deny-tool",
        },
      );
      expect(tool.status).toBe(200);
      const got = new Map((await events(h, "deny-")).map((e) => [e.requestId, e]));
      expect(got.size).toBe(cases.length + 1);
      for (const c of cases) {
        expect(got.get(c.id)).toMatchObject({ outcome: "denied", errorCode: c.code, tenantId: c.tenant });
      }
      expect(got.get("deny-tool")).toMatchObject({
        outcome: "denied",
        errorCode: "unknown_tool",
        tool: "nope",
        tenantId: "tenant-0",
      });
    } finally {
      await h.app.tenants.resume({ id: "test" }, "tenant-2");
    }
  });

  it("answers 503 before doing any work when the audit queue is full", async () => {
    const audit = h.app.audit;
    const runs = counter.state.runs;
    await audit.flush(); // nothing queued: only our reservations hold the queue, so it stays full
    let taken = 0;
    while (audit.reserve()) taken++;
    try {
      const r = await mcp(h, h.tenants[0]!.token, "tools/call", { name: "count", arguments: {} });
      expect(r.status).toBe(503);
      expect(r.body.error).toBe("service_unavailable");
      expect(r.headers.get("retry-after")).toBe("1");
      expect(counter.state.runs).toBe(runs);
    } finally {
      // Give the slots back as events (a reservation is always consumed by exactly one event).
      const filler: AuditEvent = {
        at: new Date().toISOString(),
        kind: "request",
        tenantId: null,
        userId: null,
        impersonatedBy: null,
        action: "test/filler",
        tool: null,
        outcome: "ok",
        errorCode: null,
        latencyMs: 0,
        requestId: "filler",
        replica: "test",
        details: null,
      };
      for (let i = 0; i < taken; i++) audit.enqueue(filler, { reserved: true });
      await audit.flush();
    }
    const ok = await mcp(h, h.tenants[0]!.token, "tools/call", { name: "count", arguments: {} });
    expect(ok.status).toBe(200);
    expect(counter.state.runs).toBe(runs + 1);
  });
});

describe("shutdown mid-load", () => {
  it("every request that got a response has exactly one event, and no event lacks a response", async () => {
    const counter = counterTool();
    const h = await startHarness({
      tenants: TENANTS,
      tools: [counter.tool],
      // JSON lines: the file outlives the database, which close() shuts.
      config: {
        audit: { sink: "jsonl", flush_interval_ms: 50, batch_size: 1000 },
        rate_limit: { max_in_flight_per_tenant: 0 },
      },
    });
    try {
      const tokens = h.tenants.map((t) => t.token);
      const N = 300;
      let closing: Promise<void> | undefined;
      /** Requests that got an HTTP response (a 429 from the tenant's rate limit counts: it is audited too). */
      const responded: string[] = [];
      const served: string[] = [];
      const attempts = Array.from({ length: N }, (_, i) =>
        (async () => {
          // Stagger so that some requests start after the shutdown began.
          await new Promise((r) => setTimeout(r, i % 60));
          const id = `sig-${i}`;
          try {
            const r = await mcp(
              h,
              tokens[i % TENANTS],
              "tools/call",
              { name: "count", arguments: { delay_ms: 20 } },
              {
                "X-Request-Id": id,
              },
            );
            responded.push(id);
            if (r.status === 200) served.push(id);
          } catch {
            // refused: the server was no longer listening
          }
          if (i === 100) closing = h.app.close();
        })(),
      );
      await Promise.all(attempts);
      await closing;
      expect(served.length).toBeGreaterThan(100);
      const logged = (await jsonlAuditReader(h.app.config.audit.path).query({ limit: 10_000 })).filter((e) =>
        e.requestId?.startsWith("sig-"),
      );
      const ids = logged.map((e) => e.requestId!);
      expect(new Set(ids).size).toBe(ids.length);
      expect(new Set(ids)).toEqual(new Set(responded));
      expect(counter.state.runs).toBe(served.length);
      for (const e of logged) {
        const i = Number(e.requestId!.slice(4));
        expect(e.tenantId).toBe(h.tenants[i % TENANTS]!.id);
      }
    } finally {
      await h.close();
    }
  });
});

describe("shutdown while a request whose client went away is still running", () => {
  it("close() waits for it: its tool finishes and its event is written", async () => {
    let started!: () => void;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    let finish!: () => void;
    const gate = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const held = defineTool({
      name: "held",
      description: "runs until the test lets it finish",
      input: z.object({}),
      run: async () => {
        started();
        await gate;
        return { done: true };
      },
    });
    const h = await startHarness({
      tenants: 1,
      tools: [held],
      config: { audit: { sink: "jsonl", flush_interval_ms: 50 } },
    });
    try {
      const client = new AbortController();
      const request = fetch(h.mcpUrl, {
        method: "POST",
        signal: client.signal,
        headers: {
          Authorization: `Bearer ${h.tenants[0]!.token}`,
          "Content-Type": "application/json",
          Accept: "application/json, text/event-stream",
          "X-Request-Id": "gone-1",
        },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "held" } }),
      });
      await running;
      client.abort();
      await request.catch(() => {});
      // The client's connection is gone; the shutdown begins while the tool still runs.
      let closed = false;
      const closing = h.app.close().then(() => {
        closed = true;
      });
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(closed).toBe(false);
      finish();
      await closing;
      const logged = (await jsonlAuditReader(h.app.config.audit.path).query({ limit: 10_000 })).filter(
        (e) => e.requestId === "gone-1",
      );
      expect(logged.map((e) => [e.action, e.tool, e.outcome])).toEqual([["tools/call", "held", "ok"]]);
    } finally {
      finish();
      await h.close();
    }
  });
});
