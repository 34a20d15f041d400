/**
 * Slot accounting of the audit queue: every `reserve()` that succeeded is matched by exactly one
 * `enqueue(…, { reserved: true })` or one `unreserve()`, on every path of a /mcp request. A leaked
 * slot is never given back, so a server leaking one per refused request ends up answering 503 to
 * everyone; an extra `unreserve()` silently takes another request's slot, whose event is then lost.
 * Each path below is hammered, then the counts must balance and the whole queue be free again.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AuditSink } from "../../src/audit/audit-event.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { counterTool, mcp } from "../admin/helpers.js";
import { rawMcpPost } from "../support/raw-mcp.js";

const QUEUE = 40;
const ROUNDS = 5;

/** Counts the sink's slot calls (the endpoint calls them through the same object). */
function countSlots(audit: AuditSink) {
  const c = { reserved: 0, unreserved: 0, enqueuedReserved: 0 };
  const reserve = audit.reserve.bind(audit);
  const unreserve = audit.unreserve.bind(audit);
  const enqueue = audit.enqueue.bind(audit);
  audit.reserve = () => {
    const ok = reserve();
    if (ok) c.reserved++;
    return ok;
  };
  audit.unreserve = () => {
    c.unreserved++;
    unreserve();
  };
  audit.enqueue = (event, options) => {
    if (options?.reserved) c.enqueuedReserved++;
    enqueue(event, options);
  };
  return {
    counts: c,
    /** Slots taken and not (yet) given back or used. */
    outstanding: () => c.reserved - c.unreserved - c.enqueuedReserved,
  };
}

/** Waits until every request's `finally` has run (they may run after the client has its answer). */
async function settled(outstanding: () => number): Promise<number> {
  for (let i = 0; i < 200 && outstanding() !== 0; i++) await new Promise((r) => setTimeout(r, 10));
  return outstanding();
}

/** How many slots can be taken now (all given back after): the queue's free room. */
function freeRoom(audit: AuditSink): number {
  let n = 0;
  while (n <= QUEUE && audit.reserve()) n++;
  for (let k = 0; k < n; k++) audit.unreserve();
  return n;
}

async function post(
  h: Harness,
  token: string | undefined,
  body: unknown,
  headers: Record<string, string> = {},
) {
  const res = await fetch(h.mcpUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  await res.arrayBuffer();
  return res.status;
}

const list = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ jsonrpc: "2.0", id: i + 1, method: "tools/list" }));

/** A POST sent chunked (no Content-Length): a body too large is found while reading it. */
function chunked(h: Harness, token: string, body: string): Promise<number> {
  return new Promise((resolve) => {
    const req = rawMcpPost(h.mcpUrl, token);
    req.on("response", (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", () => resolve(0));
    req.end(body);
  });
}

/** A POST whose body never completes: the client goes away mid-body. */
function abandonedBody(h: Harness, token: string): Promise<void> {
  return new Promise((resolve) => {
    const req = rawMcpPost(h.mcpUrl, token, { "Content-Length": "1000" });
    req.on("error", () => resolve());
    req.on("close", () => resolve());
    req.write('{"jsonrpc":"2.0",');
    setTimeout(() => req.destroy(), 50);
  });
}

describe("audit slots: every reservation is given back or used, on every path", () => {
  let h: Harness;
  let slots: ReturnType<typeof countSlots>;
  const counter = counterTool();

  beforeAll(async () => {
    h = await startHarness({
      tenants: 2,
      tools: [counter.tool],
      config: {
        server: { max_body_bytes: 4096 },
        audit: { queue_size: QUEUE, batch_size: 10, flush_interval_ms: 5 },
        rate_limit: { max_in_flight_per_tenant: 1 },
      },
    });
    await h.app.tenants.create({ id: "test" }, { id: "noisy", name: "noisy", rateLimit: 1 });
    await h.app.tenants.create({ id: "test" }, { id: "pair", name: "pair", rateLimit: 2 });
    slots = countSlots(h.app.audit);
  });
  afterAll(async () => {
    await h?.close();
  });

  it("stateless: successes, refusals, batches, body failures, disconnects", async () => {
    const t0 = h.tenants[0]!.token;
    const t1 = h.tenants[1]!.token;
    const noisy = await h.token("noisy");
    const pair = await h.token("pair");
    for (let round = 0; round < ROUNDS; round++) {
      const results: Promise<unknown>[] = [];
      // Success, single and batched; a batch with a notification.
      results.push(mcp(h, t0, "tools/list"));
      results.push(post(h, t1, list(3)));
      results.push(post(h, t1, [...list(2), { jsonrpc: "2.0", method: "notifications/initialized" }]));
      // Refused before admission, at admission (unknown tenant: an async registry read), junk.
      results.push(mcp(h, "junk", "tools/list"));
      results.push(mcp(h, await h.token(`ghost-${round}`), "tools/list"));
      results.push(post(h, t0, "x", { "Content-Type": "text/plain" }));
      // Refused by the rate limit: a single request, a batch on its own token, a batch on the others'.
      results.push(mcp(h, noisy, "tools/list"));
      results.push(post(h, noisy, list(4)));
      results.push(post(h, pair, list(4)));
      // Work that fails: parse error, empty batch, too large a batch, an unknown method, a body too large.
      results.push(post(h, t0, "{not json"));
      results.push(post(h, t0, []));
      results.push(post(h, t0, list(1000)));
      results.push(mcp(h, t0, "no/such/method"));
      results.push(chunked(h, t1, `{"pad":"${"x".repeat(5000)}"}`));
      // A client gone mid-body (readBody fails after the request was admitted).
      results.push(abandonedBody(h, t1));
      await Promise.all(results);
      // The in-flight cap: one slow call holds it, the next is refused; one gone mid-call.
      const slow = mcp(h, t0, "tools/call", { name: "count", arguments: { delay_ms: 150 } });
      await new Promise((r) => setTimeout(r, 30));
      const capped = await mcp(h, t0, "tools/list");
      expect(capped.status).toBe(429);
      expect(capped.body.error).toBe("too_many_concurrent");
      await slow;
      const aborted = new AbortController();
      const gone = fetch(h.mcpUrl, {
        method: "POST",
        signal: aborted.signal,
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json, text/event-stream",
          Authorization: `Bearer ${t1}`,
        },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "tools/call",
          params: { name: "count", arguments: { delay_ms: 100 } },
        }),
      }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 30));
      aborted.abort();
      await gone;
      await new Promise((r) => setTimeout(r, 120));
      // A batch whose extra slots are not there: 503, and its own slot is used by its event.
      await h.app.audit.flush(); // nothing is written meanwhile: the room is what is reserved
      const held: number[] = [];
      while (h.app.audit.reserve()) held.push(1);
      for (let k = 0; k < 2; k++) {
        held.pop();
        h.app.audit.unreserve();
      }
      expect(await post(h, t1, list(4))).toBe(503);
      for (const _ of held) h.app.audit.unreserve();
      held.length = 0;
      // Refused with 503 before any work: the queue is full.
      await h.app.audit.flush();
      while (h.app.audit.reserve()) held.push(1);
      expect((await mcp(h, t0, "tools/list")).status).toBe(503);
      for (let k = held.length; k > 0; k--) h.app.audit.unreserve();
      held.length = 0;
      // Admission that waits on the registry (its cache dropped), then succeeds.
      h.app.registry.invalidate();
      expect((await mcp(h, t0, "tools/list")).status).toBe(200);
    }
    expect(await settled(slots.outstanding)).toBe(0);
    await h.app.audit.flush();
    expect(freeRoom(h.app.audit)).toBe(QUEUE);
    expect(slots.counts.reserved).toBeGreaterThan(0);
  });
});

describe("audit slots: stateful sessions (DELETE, unknown and missing sessions)", () => {
  let h: Harness;
  let slots: ReturnType<typeof countSlots>;

  beforeAll(async () => {
    h = await startHarness({
      tenants: 1,
      config: {
        server: { sessions: "stateful" },
        audit: { queue_size: QUEUE, batch_size: 10, flush_interval_ms: 5 },
      },
    });
    await h.app.tenants.create({ id: "test" }, { id: "noisy", name: "noisy", rateLimit: 1 });
    slots = countSlots(h.app.audit);
  });
  afterAll(async () => {
    await h?.close();
  });

  async function open(token: string): Promise<string | null> {
    const res = await fetch(h.mcpUrl, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json, text/event-stream",
        Authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } },
      }),
    });
    await res.arrayBuffer();
    return res.headers.get("mcp-session-id");
  }

  async function del(token: string, sid: string | undefined) {
    const res = await fetch(h.mcpUrl, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${token}`, ...(sid ? { "Mcp-Session-Id": sid } : {}) },
    });
    await res.arrayBuffer();
    return res.status;
  }

  it("DELETE of a session, of none, of an unknown one, and over the rate", async () => {
    const t0 = h.tenants[0]!.token;
    const noisy = await h.token("noisy");
    for (let round = 0; round < ROUNDS; round++) {
      const sid = await open(t0);
      expect(sid).toBeTruthy();
      expect(await post(h, t0, list(2), { "Mcp-Session-Id": sid! })).toBe(200);
      expect(await del(t0, sid!)).toBe(200);
      expect(await del(t0, sid!)).toBe(404);
      expect(await del(t0, undefined)).toBe(404);
      expect(await post(h, t0, list(1), { "Mcp-Session-Id": "nope" })).toBe(404);
      expect(await post(h, t0, list(2))).toBe(400);
      expect(await del("junk", "x")).toBe(401);
      await del(noisy, "x"); // 429 after its first
      await open(noisy);
    }
    expect(await settled(slots.outstanding)).toBe(0);
    await h.app.audit.flush();
    expect(freeRoom(h.app.audit)).toBe(QUEUE);
  });
});
