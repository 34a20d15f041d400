import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { ServerMetrics } from "../../src/server/metrics.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { defineTool } from "../../src/tools/define-tool.js";
import { callTool, type McpReply, postMcp } from "../support/replicas.js";

/*
 * Rate limiting and the in-flight cap over HTTP, through the whole pipeline. A counting tool
 * proves that a limited request did no tool work; a second tenant proves the limits are per
 * tenant (no noisy neighbour).
 */

// One request a second, so a burst that the (shared, busy) CI machine needs a while to serve
// still lands within one refill interval.
const LIMIT = 60;
const BURST = 10;
const INTERVAL_MS = 60_000 / LIMIT;

function countingTools() {
  const calls = new Map<string, number>();
  let open: () => void = () => {};
  let gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const started = new Map<string, number>();
  const bump = (m: Map<string, number>, id: string) => m.set(id, (m.get(id) ?? 0) + 1);
  return {
    calls: (tenant: string) => calls.get(tenant) ?? 0,
    started: (tenant: string) => started.get(tenant) ?? 0,
    release() {
      open();
      gate = new Promise<void>((resolve) => {
        open = resolve;
      });
    },
    tools: [
      defineTool({
        name: "count",
        description: "counts its invocations",
        input: z.object({}),
        run: (_input, ctx) => {
          bump(calls, ctx.tenant.tenantId);
          return { n: calls.get(ctx.tenant.tenantId) };
        },
      }),
      defineTool({
        name: "block",
        description: "waits until the test releases it",
        input: z.object({}),
        run: async (_input, ctx) => {
          bump(started, ctx.tenant.tenantId);
          await gate;
          return { released: true };
        },
      }),
    ],
  };
}

const okCall = (r: McpReply) => r.status === 200 && r.body.error === undefined;

/** Sums `tenantry_rate_limit_<kind>_total{tenant="<tenant>"}` in a Prometheus text page. */
function counter(text: string, kind: "allowed" | "limited", tenant: string): number {
  const line = text
    .split("\n")
    .find((l) => l.startsWith(`tenantry_rate_limit_${kind}_total{tenant="${tenant}"}`));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

describe("rate limits over HTTP (tenant limit N per minute, burst B)", () => {
  let h: Harness;
  const counting = countingTools();
  let baseline = "";
  const tally = { acme: { allowed: 0, limited: 0 }, globex: { allowed: 0, limited: 0 } };
  const record = (tenant: "acme" | "globex", r: McpReply) => {
    if (r.status === 429) tally[tenant].limited++;
    else tally[tenant].allowed++;
  };

  beforeAll(async () => {
    h = await startHarness({
      tenants: [
        { id: "acme", rateLimit: LIMIT },
        { id: "globex", rateLimit: 10_000 },
      ],
      tools: counting.tools,
      // No in-flight cap here: the burst is sent all at once.
      config: { rate_limit: { burst: BURST, max_in_flight_per_tenant: 0 } },
    });
    // The harness's own clients already sent `initialize` and `notifications/initialized`: two of
    // acme's requests. Wait until they have refilled, so the burst starts at full capacity.
    await new Promise((r) => setTimeout(r, 2 * INTERVAL_MS + 250));
    baseline = await (await fetch(`${h.url}/metrics`)).text();
  });
  afterAll(async () => h?.close());

  let lastLimitedAt = 0;

  it("allows exactly N + B at once, then 429 rate_limited with headers and no tool work; B is unaffected", async () => {
    const acme = h.tenant("acme").token;
    const globex = h.tenant("globex").token;
    const started = performance.now();
    const stamp = async (p: Promise<McpReply>) => {
      const r = await p;
      if (r.status === 429) lastLimitedAt = Math.max(lastLimitedAt, performance.now());
      return r;
    };
    // Tenant B's calls are interleaved with A's burst.
    const [a, b] = await Promise.all([
      Promise.all(Array.from({ length: 100 }, () => stamp(callTool(h.mcpUrl, acme, "count")))),
      Promise.all(Array.from({ length: 30 }, () => callTool(h.mcpUrl, globex, "count"))),
    ]);
    const elapsed = performance.now() - started;
    for (const r of a) record("acme", r);
    for (const r of b) record("globex", r);

    const allowed = a.filter(okCall);
    const limited = a.filter((r) => r.status === 429);
    expect(allowed.length + limited.length).toBe(a.length);
    // Capacity refills continuously: exactly N + B, plus one per interval the burst took to serve.
    expect(allowed.length).toBeGreaterThanOrEqual(LIMIT + BURST);
    expect(allowed.length).toBeLessThanOrEqual(LIMIT + BURST + Math.floor(elapsed / INTERVAL_MS));
    console.info(
      `[e2e-rate-limit] burst: ${allowed.length} of ${a.length} allowed in ${Math.round(elapsed)} ms`,
    );

    for (const r of limited) {
      expect(r.body).toMatchObject({ error: "rate_limited" });
      expect(r.headers.get("retry-after")).toBe("1"); // ≤ one interval, rounded up to whole seconds
      expect(r.headers.get("ratelimit-policy")).toBe(`"default";q=${LIMIT + BURST};w=60`);
      expect(r.headers.get("ratelimit")).toMatch(/^"default";r=0;t=\d+$/);
    }
    for (const r of allowed) {
      expect(r.headers.get("ratelimit-policy")).toBe(`"default";q=${LIMIT + BURST};w=60`);
      expect(r.headers.get("ratelimit")).toMatch(/^"default";r=\d+;t=\d+$/);
      expect(r.headers.get("retry-after")).toBeNull();
    }
    // A limited request never reached the tool.
    expect(counting.calls("acme")).toBe(allowed.length);

    // B was served while A was being limited, and still is.
    expect(b.every(okCall)).toBe(true);
    const other = await callTool(h.mcpUrl, globex, "count");
    record("globex", other);
    expect(okCall(other)).toBe(true);
    expect(counting.calls("globex")).toBe(b.length + 1);
  });

  it("recovers at the configured rate: one more request per 60/N s (not one per second whatever N)", async () => {
    const acme = h.tenant("acme").token;
    await new Promise((resolve) => setTimeout(resolve, INTERVAL_MS + 100));
    const replies: McpReply[] = [];
    for (let i = 0; i < 5; i++) replies.push(await callTool(h.mcpUrl, acme, "count"));
    const sinceLimited = performance.now() - lastLimitedAt;
    for (const r of replies) record("acme", r);
    const allowed = replies.filter(okCall).length;
    expect(allowed).toBeGreaterThanOrEqual(1);
    // At most what refilled since the tenant was last found empty (normally 1, at most 2).
    expect(allowed).toBeLessThanOrEqual(1 + Math.floor(sinceLimited / INTERVAL_MS));
    expect(replies.at(-1)!.status).toBe(429);
    console.info(
      `[e2e-rate-limit] ${Math.round(sinceLimited)} ms after the last 429: ${allowed} more allowed`,
    );
  });

  it("/metrics counts allowed and limited decisions per tenant, and only for admitted tenants", async () => {
    // Tokens naming tenants that are not registered are refused before the limiter: they can
    // never add label values, whatever org_id an attacker puts in a token.
    for (let i = 0; i < 20; i++) {
      const stranger = await h.token(`stranger-${i}`);
      expect((await callTool(h.mcpUrl, stranger, "count")).status).toBe(403);
    }
    const res = await fetch(`${h.url}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    const delta = (kind: "allowed" | "limited", tenant: string) =>
      counter(text, kind, tenant) - counter(baseline, kind, tenant);
    expect(counter(baseline, "allowed", "acme")).toBe(2);
    expect(delta("allowed", "acme")).toBe(tally.acme.allowed);
    expect(delta("limited", "acme")).toBe(tally.acme.limited);
    expect(delta("allowed", "globex")).toBe(tally.globex.allowed);
    expect(counter(text, "limited", "globex")).toBe(0);
    expect(text).toContain("# TYPE tenantry_rate_limit_allowed_total counter");
    const labels = new Set(
      [...text.matchAll(/^tenantry_rate_limit_\w+_total\{tenant="([^"]*)"\}/gm)].map((m) => m[1]),
    );
    expect(labels).toEqual(new Set(["acme", "globex"]));
    expect(tally.acme.limited).toBeGreaterThan(0);
  });
});

describe("the in-flight cap per tenant (max_in_flight_per_tenant = 2)", () => {
  let h: Harness;
  const counting = countingTools();

  beforeAll(async () => {
    h = await startHarness({
      tenants: [{ id: "acme" }, { id: "globex" }, { id: "initech", rateLimit: 10 }],
      tools: counting.tools,
      config: { rate_limit: { max_in_flight_per_tenant: 2, burst: 0 } },
    });
  });
  afterAll(async () => {
    counting.release();
    await h?.close();
  });

  it("A's third concurrent request gets 429 too_many_concurrent with Retry-After; B is served meanwhile", async () => {
    const acme = h.tenant("acme").token;
    const globex = h.tenant("globex").token;
    const holding = [callTool(h.mcpUrl, acme, "block"), callTool(h.mcpUrl, acme, "block")];
    const deadline = Date.now() + 5000;
    while (counting.started("acme") < 2) {
      if (Date.now() > deadline) throw new Error("the blocking calls never started");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }

    const third = await callTool(h.mcpUrl, acme, "count");
    expect(third.status).toBe(429);
    expect(third.body).toMatchObject({ error: "too_many_concurrent" });
    expect(third.headers.get("retry-after")).toBe("1");
    expect(counting.calls("acme")).toBe(0); // no tool work
    const ping = await postMcp(h.mcpUrl, acme, "ping");
    expect(ping.status).toBe(429);

    // B is not affected by A holding its cap, even with its own requests in flight.
    const bHolding = callTool(h.mcpUrl, globex, "block");
    for (let i = 0; i < 5; i++) expect(okCall(await callTool(h.mcpUrl, globex, "count"))).toBe(true);
    expect(counting.calls("globex")).toBe(5);

    counting.release();
    for (const r of [...(await Promise.all(holding)), await bHolding]) expect(okCall(r)).toBe(true);
    // Slots are released once the requests finish.
    expect(okCall(await callTool(h.mcpUrl, acme, "count"))).toBe(true);
    expect(counting.calls("acme")).toBe(1);
  });

  it("a request refused by the cap spends none of the tenant's rate", async () => {
    const token = await h.token("initech");
    const remaining = (r: { headers: Headers }) =>
      Number(/r=(\d+)/.exec(r.headers.get("ratelimit") ?? "")?.[1] ?? Number.NaN);
    const first = await callTool(h.mcpUrl, token, "count");
    expect(okCall(first)).toBe(true);
    const before = remaining(first);
    expect(before).toBeGreaterThanOrEqual(4);
    const holding = [callTool(h.mcpUrl, token, "block"), callTool(h.mcpUrl, token, "block")];
    const deadline = Date.now() + 5000;
    while (counting.started("initech") < 2) {
      if (Date.now() > deadline) throw new Error("the blocking calls never started");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    for (let i = 0; i < 20; i++) {
      const refused = await callTool(h.mcpUrl, token, "count");
      expect(refused.body).toMatchObject({ error: "too_many_concurrent" });
    }
    counting.release();
    for (const r of await Promise.all(holding)) expect(okCall(r)).toBe(true);
    // 10 a minute, no burst: the two blocking calls and this one spent three tokens; the twenty
    // refusals none (had they, this call would be a 429).
    const after = await callTool(h.mcpUrl, token, "count");
    expect(okCall(after)).toBe(true);
    expect(remaining(after)).toBe(before - 3);
  });
});

describe("tenant label budget of the rate-limit metrics", () => {
  it("tenants past the budget are counted under (other), so /metrics stays bounded", async () => {
    const metrics = new ServerMetrics({ defaultMetrics: false, maxTenantLabels: 2 });
    for (const t of ["a", "b", "c", "d", "a"]) metrics.rateLimit(t, true);
    metrics.rateLimit("d", false);
    const text = await metrics.text();
    expect(counter(text, "allowed", "a")).toBe(2);
    expect(counter(text, "allowed", "b")).toBe(1);
    expect(counter(text, "allowed", "(other)")).toBe(2);
    expect(counter(text, "limited", "(other)")).toBe(1);
    expect(text).not.toMatch(/tenant="[cd]"/);
  });
});
