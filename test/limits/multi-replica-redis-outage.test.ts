import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { defineTool } from "../../src/tools/define-tool.js";
import { type PrivateRedis, redisServerGate, startPrivateRedis, uniqueKeyPrefix } from "../support/redis.js";
import {
  callTool,
  type McpReply,
  pollUntil,
  REPLICA_AUDIENCE,
  type Replica,
  startReplica,
} from "../support/replicas.js";

/*
 * Two replicas per policy share a private Redis, which the test stops and starts again. With Redis
 * up they enforce one limit together; with it down, `on_backend_error = "deny"` answers 503
 * backend_unavailable (never "unlimited") and `"local"` limits each replica on its own; when Redis
 * is back, shared limiting resumes without restarting anything.
 */

const canSpawn = redisServerGate();

const LIMIT = 30; // per minute: one request every 2 s
const INTERVAL_MS = 60_000 / LIMIT;

let invocations = 0;
const count = defineTool({
  name: "count",
  description: "counts its invocations",
  input: z.object({}),
  run: () => ({ n: ++invocations }),
});

const ok = (r: McpReply) => r.status === 200 && r.body.error === undefined;

describe.skipIf(!canSpawn)("rate limiting across replicas when Redis goes away and comes back", () => {
  let redis: PrivateRedis;
  let issuer: TestIssuer;
  let inspect: Redis;
  const prefix = uniqueKeyPrefix("outage");
  const deny: Replica[] = [];
  const local: Replica[] = [];
  const tokens = new Map<string, string>();
  const TENANTS = ["shared", "down-deny", "down-local", "back-deny", "back-local", "probe-0", "probe-1"];

  const token = (tenant: string) => tokens.get(tenant)!;
  /** `n` calls of `tenant`, alternating between `replicas`, one after the other. */
  const alternate = async (replicas: Replica[], tenant: string, n: number) => {
    const started = performance.now();
    const replies: McpReply[][] = replicas.map(() => []);
    for (let i = 0; i < n; i++) {
      const at = i % replicas.length;
      replies[at]!.push(await callTool(replicas[at]!.mcpUrl, token(tenant), "count"));
    }
    return { replies, elapsed: performance.now() - started };
  };

  beforeAll(async () => {
    redis = await startPrivateRedis();
    issuer = await startTestIssuer();
    inspect = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    inspect.on("error", () => {});
    for (const [policy, group] of [
      ["deny", deny],
      ["local", local],
    ] as const) {
      for (let i = 0; i < 2; i++) {
        const replica = await startReplica({
          issuer,
          tools: [count],
          replicaId: `${policy}-${i}`,
          config: {
            rate_limit: {
              backend: "redis",
              redis_url: redis.url,
              key_prefix: prefix,
              on_backend_error: policy,
            },
          },
        });
        group.push(replica);
        // Each replica has its own embedded registry; the limiter state is what they share.
        for (const id of TENANTS) {
          await replica.app.tenants.create(
            { id: "test" },
            { id, name: id, rateLimit: id.startsWith("probe") ? 1 : LIMIT },
          );
        }
      }
    }
    for (const id of TENANTS)
      tokens.set(id, await issuer.auth0Token({ orgId: id, audience: REPLICA_AUDIENCE }));
  }, 60_000);
  afterAll(async () => {
    for (const r of [...deny, ...local]) await r.close();
    inspect?.disconnect();
    await issuer?.close();
    await redis?.stop();
  });

  it("with Redis up, replicas share one limit (not N replicas × the limit)", async () => {
    const { replies, elapsed } = await alternate(
      [deny[0]!, deny[1]!, local[0]!, local[1]!],
      "shared",
      LIMIT + 20,
    );
    const allowed = replies.flat().filter(ok).length;
    expect(allowed).toBeGreaterThanOrEqual(LIMIT);
    expect(allowed).toBeLessThanOrEqual(LIMIT + Math.floor(elapsed / INTERVAL_MS));
    // Every replica took part: each let some through and refused some.
    for (const r of replies) expect(r.some(ok) && r.some((x) => x.status === 429)).toBe(true);
  });

  it("with Redis stopped, deny answers 503 backend_unavailable with Retry-After; local limits per replica", async () => {
    await redis.stop();
    const refused: McpReply[] = [];
    await pollUntil(
      async () => {
        const r = await callTool(deny[0]!.mcpUrl, token("down-deny"), "count");
        if (r.status === 503) refused.push(r);
        return r.status === 503;
      },
      5000,
      "deny replica notices the outage",
    );
    const before = invocations;
    const { replies } = await alternate(deny, "down-deny", 20);
    refused.push(...replies.flat());
    for (const r of refused) {
      expect(r.status).toBe(503);
      expect(r.body).toMatchObject({ error: "backend_unavailable" });
      expect(r.headers.get("retry-after")).toBe("1");
    }
    expect(invocations).toBe(before); // no tool work while undecidable

    // local: each replica enforces the limit by itself: about 2 × LIMIT in total, never unlimited.
    const n = 2 * LIMIT + 30;
    const run = await alternate(local, "down-local", n);
    for (const [i, r] of run.replies.entries()) {
      const allowed = r.filter(ok).length;
      expect(allowed, `local replica ${i}`).toBeGreaterThanOrEqual(LIMIT);
      expect(allowed, `local replica ${i}`).toBeLessThanOrEqual(
        LIMIT + Math.floor(run.elapsed / INTERVAL_MS),
      );
      const limited = r.filter((x) => x.status === 429);
      expect(limited.length).toBeGreaterThan(0);
      for (const x of limited) expect(x.body).toMatchObject({ error: "rate_limited" });
    }
    console.info(
      `[redis-outage] local fallback: ${run.replies.map((r) => r.filter(ok).length).join(" + ")} of ${n} allowed`,
    );
  });

  it("when Redis is back, shared limiting resumes without a restart", async () => {
    await redis.start();
    await inspect.connect().catch(() => {});
    // deny replicas: served again once they have reconnected.
    for (const [i, r] of deny.entries()) {
      const ms = await pollUntil(
        async () => (await callTool(r.mcpUrl, token(`probe-${i}`), "count")).status !== 503,
        10_000,
        `deny replica ${i} reconnects`,
      );
      console.info(`[redis-outage] deny replica ${i} served again after ${Math.round(ms)} ms`);
    }
    // local replicas: back on Redis once their decisions land there (a probe tenant's key appears).
    for (const [i, r] of local.entries()) {
      const key = `${prefix}:{probe-${i}}`;
      await inspect.del(key);
      await pollUntil(
        async () => {
          await callTool(r.mcpUrl, token(`probe-${i}`), "count");
          return (await inspect.exists(key)) === 1;
        },
        10_000,
        `local replica ${i} uses Redis again`,
      );
    }
    for (const [group, tenant] of [
      [deny, "back-deny"],
      [local, "back-local"],
    ] as const) {
      const { replies, elapsed } = await alternate(group, tenant, LIMIT + 20);
      const allowed = replies.flat().filter(ok).length;
      expect(allowed, tenant).toBeGreaterThanOrEqual(LIMIT);
      expect(allowed, tenant).toBeLessThanOrEqual(LIMIT + Math.floor(elapsed / INTERVAL_MS));
      expect(replies.flat().every((r) => r.status === 200 || r.status === 429)).toBe(true);
    }
  }, 45_000);
});
