import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { z } from "zod";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { defineTool } from "../../src/tools/define-tool.js";
import { REDIS_URL, redisGate, uniqueKeyPrefix } from "../support/redis.js";
import { postJsonRpc } from "../support/replicas.js";

const redisUp = await redisGate();

/*
 * A JSON-RPC batch (protocol versions before 2025-06-18) carries many messages in one HTTP
 * request. Each request message in it is one operation: it spends one rate-limit token and gets
 * one audit event. Otherwise one token buys as many tool calls as fit in a body, and calls hide
 * in a batch unaudited.
 */

const LIMIT = 6; // per minute, no burst: six tokens, one every 10 s

function postBatch(h: Harness, token: string, messages: unknown[], requestId: string) {
  return postJsonRpc(h.mcpUrl, token, messages, { "X-Request-Id": requestId });
}

const remaining = (r: { headers: Headers }) =>
  Number(/r=(\d+)/.exec(r.headers.get("ratelimit") ?? "")?.[1] ?? Number.NaN);

/**
 * A tenant with `left` tokens after a first call sends a batch of `left + 2` (its HTTP request
 * spends one, its other calls need two more than then remain): refused. Then a batch of `left − 1`
 * runs on what is left. Had the refused batch spent tokens call by call, nothing would be left.
 */
async function refusedBatchSpendsNothing(h: Harness, token: string) {
  const first = await postBatch(h, token, [call(1)], "");
  expect(first.status).toBe(200);
  const left = remaining(first);
  expect(left).toBeGreaterThanOrEqual(2);
  const before = runs;
  const batch = (n: number) => Array.from({ length: n }, (_, i) => call(i + 1));
  const refused = await postBatch(h, token, batch(left + 2), "");
  expect(refused.status).toBe(429);
  expect(refused.body).toEqual({ error: "rate_limited", message: "The tenant is over its request rate." });
  expect(runs).toBe(before);
  const ran = await postBatch(h, token, batch(left - 1), "");
  expect(ran.status).toBe(200);
  expect(runs).toBe(before + left - 1);
  expect(remaining(ran)).toBe(0);
}

/** Tool calls run so far, by every test of this file. */
let runs = 0;
const countTool = defineTool({
  name: "count",
  description: "counts its invocations",
  input: z.object({}),
  run: () => ({ n: ++runs }),
});

const call = (id: number, name = "count") => ({
  jsonrpc: "2.0",
  id,
  method: "tools/call",
  params: { name, arguments: {} },
});

describe("JSON-RPC batches: one token and one audit event per request message", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      tenants: [
        { id: "acme", rateLimit: LIMIT },
        { id: "globex", rateLimit: 10_000 },
        { id: "initech", rateLimit: 600 }, // a token every 100 ms
        { id: "hooli", rateLimit: LIMIT },
      ],
      tools: [countTool],
      config: { rate_limit: { burst: 0, max_in_flight_per_tenant: 0 } },
    });
  });
  afterAll(async () => h?.close());

  const events = async (requestId: string) => {
    await h.app.audit.flush();
    return (await h.app.adminServices.auditLog.query({ limit: 10_000 })).filter(
      (e) => e.requestId === requestId,
    );
  };

  it("a batch of more calls than the tenant has tokens is refused whole: 429, no tool runs", async () => {
    const before = runs;
    const r = await postBatch(
      h,
      h.tenant("acme").token,
      Array.from({ length: 20 }, (_, i) => call(i + 1)),
      "batch-over",
    );
    expect(r.status).toBe(429);
    expect(r.body).toMatchObject({
      error: "rate_limited",
      message: "A batch of 20 calls is more than this tenant may make at once (6); send smaller batches.",
    });
    expect(r.headers.get("retry-after")).not.toBeNull();
    expect(runs).toBe(before);
    // Every refused call is in the audit log, as refused.
    const logged = await events("batch-over");
    expect(logged).toHaveLength(20);
    for (const e of logged) {
      expect(e).toMatchObject({
        tenantId: "acme",
        tool: "count",
        outcome: "denied",
        errorCode: "rate_limited",
      });
    }
  });

  it("a batch the audit queue has no room for is refused whole: 503, no tool runs, no slot lost", async () => {
    const before = runs;
    const audit = h.app.audit;
    await audit.flush();
    // Leave room for the request's own event and one more: a batch of three needs three.
    let taken = 0;
    while (audit.reserve()) taken++;
    for (let k = 0; k < 2; k++) {
      audit.unreserve();
      taken--;
    }
    try {
      const r = await postBatch(h, h.tenant("globex").token, [call(1), call(2), call(3)], "batch-full");
      expect(r.status).toBe(503);
      expect(runs).toBe(before);
      expect(audit.full).toBe(false); // the batch gave back what it took
    } finally {
      for (let k = 0; k < taken; k++) audit.unreserve();
    }
    expect(audit.reserve()).toBe(true);
    audit.unreserve();
  });

  it("a batch within the limit runs every call, each audited with its own tool and outcome", async () => {
    const before = runs;
    const r = await postBatch(
      h,
      h.tenant("globex").token,
      [call(1), call(2, "nope"), { jsonrpc: "2.0", method: "notifications/initialized" }, call(3)],
      "batch-ok",
    );
    expect(r.status).toBe(200);
    const answers = r.body as unknown as { id: number; result?: { isError?: boolean } }[];
    expect(answers.map((a) => a.id)).toEqual([1, 2, 3]);
    expect(runs).toBe(before + 2);
    const logged = await events("batch-ok");
    expect(logged.map((e) => [e.tenantId, e.action, e.tool, e.outcome, e.errorCode])).toEqual([
      ["globex", "tools/call", "count", "ok", null],
      ["globex", "tools/call", "nope", "denied", "unknown_tool"],
      ["globex", "tools/call", "count", "ok", null],
    ]);
  });

  it("each call of a batch spends a token: the tenant's remaining allowance drops by the batch's size", async () => {
    const initech = h.tenant("initech").token;
    const one = await postBatch(h, initech, [call(1)], "single");
    const batch = await postBatch(h, initech, [call(1), call(2), call(3), call(4)], "four");
    expect(batch.status).toBe(200);
    // 4 spent by the batch; allow one token of refill between the two requests.
    expect(remaining(one) - remaining(batch)).toBeGreaterThanOrEqual(3);
    expect(remaining(one) - remaining(batch)).toBeLessThanOrEqual(4);
  });

  it("a refused batch spends none of its calls' tokens: what the tenant had left still runs", async () => {
    await refusedBatchSpendsNothing(h, h.tenant("hooli").token);
  });

  it("a batch's RateLimit headers replace the request's own, whatever request id the client chose", async () => {
    // A request id may be any [A-Za-z0-9._:-]{1,128}, the name of a header field included.
    const r = await postBatch(h, h.tenant("globex").token, [call(1), call(2)], "RateLimit-Policy");
    expect(r.status).toBe(200);
    expect(r.headers.get("x-request-id")).toBe("RateLimit-Policy");
    expect(r.headers.get("ratelimit-policy")).toBe('"default";q=10000;w=60');
    expect(r.headers.get("ratelimit")).toMatch(/^"default";r=\d+;t=\d+$/);
  });

  it("a batch of more than 100 messages is refused before any work: 400", async () => {
    const before = runs;
    const r = await postBatch(
      h,
      h.tenant("globex").token,
      Array.from({ length: 101 }, (_, i) => call(i + 1)),
      "batch-huge",
    );
    expect(r.status).toBe(400);
    expect(runs).toBe(before);
  });
});

describe.skipIf(!redisUp)("JSON-RPC batches on the Redis backend: one decision for the batch's calls", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      tenants: [{ id: "hooli", rateLimit: LIMIT }],
      tools: [countTool],
      config: {
        rate_limit: {
          backend: "redis",
          redis_url: REDIS_URL,
          key_prefix: uniqueKeyPrefix("batch"),
          burst: 0,
          max_in_flight_per_tenant: 0,
        },
      },
    });
  });
  afterAll(async () => h?.close());

  it("a refused batch spends none of its calls' tokens: what the tenant had left still runs", async () => {
    await refusedBatchSpendsNothing(h, h.tenant("hooli").token);
  });
});

describe("JSON-RPC batches: a client that retries a refused batch after Retry-After gets through", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      tenants: [{ id: "wayne", rateLimit: LIMIT }],
      tools: [countTool],
      config: { rate_limit: { burst: 0, max_in_flight_per_tenant: 0 } },
    });
  });
  afterAll(async () => h?.close());

  it("Retry-After counts the token the retry's HTTP request spends again, so waiting as told is enough", async () => {
    // The in-memory limiter reads performance.now(): freeze it (past a full refill, whatever the
    // harness spent) and move it only as the client waits.
    let now = performance.now() + 120_000;
    const clock = vi.spyOn(performance, "now").mockImplementation(() => now);
    try {
      const token = h.tenant("wayne").token;
      // Spend all six tokens (one every 10 s): the tenant is 60 s in debt.
      for (let i = 0; i < LIMIT; i++) expect((await postBatch(h, token, [call(1)], "")).status).toBe(200);
      const batch = [call(1), call(2), call(3)];
      const statuses: number[] = [];
      const waits: number[] = [];
      for (let attempt = 0; attempt < 6; attempt++) {
        const r = await postBatch(h, token, batch, "");
        statuses.push(r.status);
        if (r.status !== 429) break;
        waits.push(Number(r.headers.get("retry-after")));
        now += waits.at(-1)! * 1000;
      }
      // The first refusal comes before the body is read: one token, 10 s. The second knows the
      // batch: its two other calls and the token its retry spends again need 30 s, and then it fits.
      // (Had it said 20 s, the retry would spend a token, be refused again, and so on forever.)
      expect({ statuses, waits }).toEqual({ statuses: [429, 429, 200], waits: [10, 30] });
    } finally {
      clock.mockRestore();
    }
  });
});
