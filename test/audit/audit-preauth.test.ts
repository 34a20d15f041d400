/**
 * Attack tests: requests refused before authentication (a junk bearer token costs the client
 * nothing) must not be able to fill the audit queue while the audit writer is slow, and so turn
 * every tenant's requests into 503s. They get a bounded share of the queue; past it they are still
 * refused as usual, counted, and summarised in one `audit.unrecorded` event. Authenticated requests
 * keep their guarantee: room for their event, or 503 before any work.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { AuditEvent } from "../../src/audit/audit-event.js";
import type { Database } from "../../src/db/database.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { counterTool, mcp } from "../admin/helpers.js";

const QUEUE = 50;
/** The unauthenticated share of a queue of 50: a tenth. */
const SHARE = 5;

/** Holds every audit INSERT until `open()`: the audit backend is stalled, not failing. */
function stallAuditWrites(db: Database) {
  const query = db.query.bind(db);
  let open: () => void = () => {};
  let gate: Promise<void> | undefined;
  db.query = (async (text: string, params?: readonly unknown[]) => {
    if (gate && text.startsWith("INSERT INTO tenantry_audit")) await gate;
    return query(text, params);
  }) as Database["query"];
  return {
    stall() {
      gate = new Promise<void>((resolve) => {
        open = resolve;
      });
    },
    open() {
      gate = undefined;
      open();
    },
  };
}

/** The value of a sample without labels in Prometheus text. */
function sample(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}

async function batch(h: Harness, token: string, size: number) {
  const res = await fetch(h.mcpUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
      Authorization: `Bearer ${token}`,
      "X-Request-Id": "batch-1",
    },
    body: JSON.stringify(
      Array.from({ length: size }, (_, i) => ({ jsonrpc: "2.0", id: i + 1, method: "tools/list" })),
    ),
  });
  return { status: res.status, body: (await res.json()) as unknown };
}

describe("requests refused before authentication cannot fill the audit queue", () => {
  let h: Harness;
  let writes: ReturnType<typeof stallAuditWrites>;
  const counter = counterTool();

  beforeAll(async () => {
    h = await startHarness({
      tenants: 2,
      tools: [counter.tool],
      config: { audit: { queue_size: QUEUE, batch_size: 10, flush_interval_ms: 5 } },
    });
    writes = stallAuditWrites(h.app.dbs.admin);
  });
  afterAll(async () => {
    writes?.open();
    await h?.close();
  });
  beforeEach(async () => {
    writes.open();
    await h.app.audit.flush();
    h.app.metrics.registry.resetMetrics();
  });

  async function events(): Promise<AuditEvent[]> {
    await h.app.audit.flush();
    return h.app.adminServices.auditLog.query({ limit: 10_000 });
  }

  it("a flood of junk tokens while the writer is stalled: junk is refused 401, tenants are served", async () => {
    writes.stall();
    const flood = QUEUE + 10;
    for (let i = 0; i < flood; i++) {
      const r = await mcp(h, `junk.${i}.token`, "tools/list", {}, { "X-Request-Id": `junk-${i}` });
      expect(r.status).toBe(401);
      expect(r.body.error).toBe("invalid_token");
      expect(r.headers.get("www-authenticate")).toMatch(/^Bearer .*error="invalid_token"/);
    }
    // Other refusals before authentication share the same bound, with their own status and code.
    const wrongType = await fetch(h.mcpUrl, {
      method: "POST",
      headers: { "Content-Type": "text/plain", "X-Request-Id": "junk-type" },
      body: "x",
    });
    expect(wrongType.status).toBe(415);
    expect(((await wrongType.json()) as { error: string }).error).toBe("unsupported_media_type");

    const runs = counter.state.runs;
    const ok = await mcp(
      h,
      h.tenants[0]!.token,
      "tools/call",
      { name: "count", arguments: {} },
      {
        "X-Request-Id": "tenant-ok",
      },
    );
    expect(ok.status).toBe(200);
    expect(counter.state.runs).toBe(runs + 1);
    const b = await batch(h, h.tenants[1]!.token, 3);
    expect(b.status).toBe(200);
    expect(b.body).toHaveLength(3);

    const refused = flood + 1;
    const unrecorded = sample(await h.app.metrics.text(), "tenantry_audit_unrecorded_total");
    expect(unrecorded).toBeGreaterThanOrEqual(refused - SHARE);

    writes.open();
    const all = await events();
    // At most the share was queued (less if the harness clients' own refused GETs took some of it).
    const junk = all.filter((e) => e.requestId?.startsWith("junk-"));
    expect(junk.length).toBeLessThanOrEqual(SHARE);
    for (const e of junk) expect(e).toMatchObject({ tenantId: null, outcome: "denied" });
    const summaries = all.filter((e) => e.action === "audit.unrecorded");
    expect(summaries).toHaveLength(1);
    const summary = summaries[0]!;
    expect(summary).toMatchObject({
      kind: "request",
      tenantId: null,
      outcome: "denied",
      replica: h.app.ids.replica,
      details: { unrecorded, error_codes: expect.objectContaining({ unsupported_media_type: 1 }) },
    });
    // Every refusal is either an event of its own or counted in the summary.
    const codes = summary.details!.error_codes as Record<string, number>;
    expect(junk.length + codes.invalid_token! + codes.unsupported_media_type!).toBe(refused);
    expect(all.filter((e) => e.requestId === "tenant-ok")).toHaveLength(1);
    expect(all.filter((e) => e.requestId === "batch-1")).toHaveLength(3);
  });

  it("authenticated requests keep the whole queue, and a full queue is still 503 before any work", async () => {
    writes.stall();
    const tenant = h.tenants[0]!;
    // The queue holds QUEUE events: requests that fit are all served, then the writer is behind.
    for (let i = 0; i < QUEUE; i++) {
      const r = await mcp(h, tenant.token, "tools/list", {}, { "X-Request-Id": `fill-${i}` });
      expect(r.status).toBe(200);
    }
    const runs = counter.state.runs;
    const over = await mcp(h, tenant.token, "tools/call", { name: "count", arguments: {} });
    expect(over.status).toBe(503);
    expect(over.body.error).toBe("service_unavailable");
    expect(over.headers.get("retry-after")).toBe("1");
    expect(counter.state.runs).toBe(runs);
    // A refusal after the token named a tenant needs a slot like any identified request.
    const unknown = await mcp(h, await h.token("no-such-tenant"), "tools/list");
    expect(unknown.status).toBe(503);
    // Junk is refused as junk, never 503, and only counted.
    const junk = await mcp(h, "junk", "tools/list");
    expect(junk.status).toBe(401);
    expect(junk.body.error).toBe("invalid_token");
    expect(sample(await h.app.metrics.text(), "tenantry_audit_unrecorded_total")).toBe(1);

    writes.open();
    const all = await events();
    expect(all.filter((e) => e.requestId?.startsWith("fill-"))).toHaveLength(QUEUE);
    const summaries = all.filter((e) => e.action === "audit.unrecorded");
    expect(summaries).toContainEqual(
      expect.objectContaining({
        details: expect.objectContaining({ unrecorded: 1, error_codes: { invalid_token: 1 } }),
      }),
    );
    const ok = await mcp(h, tenant.token, "tools/call", { name: "count", arguments: {} });
    expect(ok.status).toBe(200);
  });
});
