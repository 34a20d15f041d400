/**
 * Attack tests: requests refused before any work — a junk bearer token (it costs the client
 * nothing), a token of a tenant that does not exist (anyone with an account at a multi-tenant IdP
 * can mint one), a tenant far over its rate — must not be able to fill the audit queue while the
 * audit writer is slow, and so turn every other tenant's requests into 503s. They get a bounded
 * share of the queue; past it they are still refused as usual, counted, and summarised in one
 * `audit.unrecorded` event. Requests that do work keep their guarantee: room for their event, or
 * 503 before any work.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { AuditEvent } from "../../src/audit/audit-event.js";
import type { Database } from "../../src/db/database.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { counterTool, mcp } from "../admin/helpers.js";
import { postJsonRpc } from "../support/replicas.js";

const QUEUE = 50;
/** The refused requests' share of a queue of 50: a tenth. */
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

function batch(h: Harness, token: string, size: number, requestId = "batch-1") {
  const calls = Array.from({ length: size }, (_, i) => ({ jsonrpc: "2.0", id: i + 1, method: "tools/list" }));
  return postJsonRpc(h.mcpUrl, token, calls, { "X-Request-Id": requestId });
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
    // A tenant with a rate of one request a minute (no MCP client of the harness: its handshake
    // would spend it).
    await h.app.tenants.create({ id: "test" }, { id: "noisy", name: "noisy", rateLimit: 1 });
    // And one of two a minute: a batch of four gets its HTTP request's token, then is refused.
    await h.app.tenants.create({ id: "test" }, { id: "pair", name: "pair", rateLimit: 2 });
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
    // Refusals are refused as themselves, never 503, and only counted: an unknown tenant's …
    const unknown = await mcp(h, await h.token("no-such-tenant"), "tools/list");
    expect(unknown.status).toBe(403);
    expect(unknown.body.error).toBe("unknown_tenant");
    // … and junk.
    const junk = await mcp(h, "junk", "tools/list");
    expect(junk.status).toBe(401);
    expect(junk.body.error).toBe("invalid_token");
    // The 503 above was refused before any work too: counted with them.
    expect(sample(await h.app.metrics.text(), "tenantry_audit_unrecorded_total")).toBe(3);

    writes.open();
    const all = await events();
    expect(all.filter((e) => e.requestId?.startsWith("fill-"))).toHaveLength(QUEUE);
    const summaries = all.filter((e) => e.action === "audit.unrecorded");
    expect(summaries).toContainEqual(
      expect.objectContaining({
        details: expect.objectContaining({
          unrecorded: 3,
          error_codes: { service_unavailable: 1, invalid_token: 1, unknown_tenant: 1 },
          tenants: { [tenant.id]: 1, "no-such-tenant": 1 },
        }),
      }),
    );
    const ok = await mcp(h, tenant.token, "tools/call", { name: "count", arguments: {} });
    expect(ok.status).toBe(200);
  });
  it("a batch refused for want of audit room is recorded as a batch, with the room its request held", async () => {
    // A tenant of its own, whose rate the earlier tests have not spent.
    await h.app.tenants.create({ id: "test" }, { id: "roomy", name: "roomy", rateLimit: 1000 });
    const tenant = { id: "roomy", token: await h.token("roomy") };
    writes.stall();
    // Leave room for two events: the batch's HTTP request takes one, its four calls need three more.
    for (let i = 0; i < QUEUE - 2; i++) {
      const r = await mcp(h, tenant.token, "tools/list", {}, { "X-Request-Id": `room-${i}` });
      expect(r.status).toBe(200);
    }
    const refused = await batch(h, tenant.token, 4, "short-batch");
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    writes.open();
    const recorded = (await events()).filter((e) => e.requestId === "short-batch");
    expect(recorded).toEqual([
      expect.objectContaining({
        tenantId: tenant.id,
        action: "batch",
        outcome: "denied",
        errorCode: "service_unavailable",
      }),
    ]);
  });

  it("a tenant far over its rate, and unknown tenants, while the writer is stalled: other tenants are served", async () => {
    writes.stall();
    const noisy = await h.token("noisy");
    const flood = QUEUE + 10;
    const statuses: number[] = [];
    for (let i = 0; i < flood; i++) {
      const r = await mcp(h, noisy, "tools/list", {}, { "X-Request-Id": `noisy-${i}` });
      statuses.push(r.status);
    }
    // Its first request passes (a burst of one), then every one is refused 429, never 503.
    expect(statuses[0]).toBe(200);
    expect(statuses.slice(1).every((s) => s === 429)).toBe(true);
    // A batch it sends is refused with its HTTP request's own token: one event.
    expect((await batch(h, noisy, 4, "noisy-batch")).status).toBe(429);
    // A batch refused after that token, for its other calls: one event per call, from the same share.
    expect((await batch(h, await h.token("pair"), 4, "pair-batch")).status).toBe(429);
    // Tokens of tenants that do not exist: valid signatures, refused at admission.
    for (let i = 0; i < 10; i++) {
      const r = await mcp(h, await h.token(`ghost-${i}`), "tools/list", {}, { "X-Request-Id": `ghost-${i}` });
      expect(r.status).toBe(403);
      expect(r.body.error).toBe("unknown_tenant");
    }

    const runs = counter.state.runs;
    const ok = await mcp(
      h,
      h.tenants[0]!.token,
      "tools/call",
      { name: "count", arguments: {} },
      {
        "X-Request-Id": "quiet-ok",
      },
    );
    expect(ok.status).toBe(200);
    expect(counter.state.runs).toBe(runs + 1);
    const b = await batch(h, h.tenants[1]!.token, 3, "quiet-batch");
    expect(b.status).toBe(200);

    const refused = flood - 1 + 1 + 4 + 10;
    const unrecorded = sample(await h.app.metrics.text(), "tenantry_audit_unrecorded_total");
    expect(unrecorded).toBeGreaterThanOrEqual(refused - SHARE);

    writes.open();
    const all = await events();
    const mine = (prefix: string) => all.filter((e) => e.requestId?.startsWith(prefix));
    const recorded = [...mine("noisy-"), ...mine("pair-"), ...mine("ghost-")].filter(
      (e) => e.outcome === "denied",
    );
    expect(recorded.length).toBeLessThanOrEqual(SHARE);
    const summary = all.find(
      (e) => e.action === "audit.unrecorded" && (e.details?.tenants as Record<string, number>)?.noisy,
    );
    expect(summary).toBeDefined();
    const tenants = summary!.details!.tenants as Record<string, number>;
    const codes = summary!.details!.error_codes as Record<string, number>;
    // Every refusal is an event of its own or counted in the summary, under its tenant.
    expect(recorded.length + (codes.rate_limited ?? 0) + (codes.unknown_tenant ?? 0)).toBe(refused);
    const ghosts = Object.entries(tenants).filter(([id]) => id.startsWith("ghost-"));
    const named = (tenants.noisy ?? 0) + (tenants.pair ?? 0) + ghosts.reduce((n, [, c]) => n + c, 0);
    expect(recorded.length + named).toBe(refused);
    expect(mine("noisy-0")).toContainEqual(expect.objectContaining({ outcome: "ok", tenantId: "noisy" }));
    expect(mine("quiet-ok")).toHaveLength(1);
    expect(mine("quiet-batch")).toHaveLength(3);
  });
});
