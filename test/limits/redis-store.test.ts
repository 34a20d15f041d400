import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import type { RateLimitDecision } from "../../src/limits/gcra.js";
import { MemoryStore } from "../../src/limits/memory-store.js";
import { RedisStore } from "../../src/limits/redis-store.js";
import { REDIS_URL, redisGate, uniqueKeyPrefix } from "../support/redis.js";

const redisUp = await redisGate();

describe.skipIf(!redisUp)("RedisStore (shared Redis)", () => {
  const keyPrefix = uniqueKeyPrefix("rl");
  const replicaA = new RedisStore({ url: REDIS_URL, keyPrefix });
  const replicaB = new RedisStore({ url: REDIS_URL, keyPrefix });
  const admin = new Redis(REDIS_URL);

  afterAll(async () => {
    const keys = await admin.keys(`${keyPrefix}:*`);
    if (keys.length > 0) await admin.del(...keys);
    await Promise.all([replicaA.close(), replicaB.close(), admin.quit()]);
  });

  it("allows exactly limit + burst, even for concurrent requests", async () => {
    // 20/min: one request earns back in 3 s, far longer than this test takes.
    const decisions = await Promise.all(Array.from({ length: 40 }, () => replicaA.check("burst", 20, 5)));
    expect(decisions.filter((d) => d.allowed)).toHaveLength(25);
    const denied = decisions.find((d) => !d.allowed);
    expect(denied).toMatchObject({ limit: 25, remaining: 0, reason: "rate_limited" });
    expect(denied?.retryAfterMs).toBeGreaterThan(2000);
    expect(denied?.retryAfterMs).toBeLessThanOrEqual(3000);
    expect(decisions.map((d) => d.remaining).filter((r) => r > 0)).toHaveLength(24);
  });

  it("shares one limit between replicas", async () => {
    const started = performance.now();
    let allowed = 0;
    for (let i = 0; i < 200; i++) {
      const store = i % 2 === 0 ? replicaA : replicaB;
      if ((await store.check("shared", 100, 0)).allowed) allowed++;
    }
    // 100/min earns one request back every 600 ms; a local Redis answers 200 calls far sooner.
    const earned = Math.floor((performance.now() - started) / 600);
    expect(allowed).toBeGreaterThanOrEqual(100);
    expect(allowed).toBeLessThanOrEqual(100 + earned);
  });

  it("namespaces keys and lets them expire once capacity is full again", async () => {
    expect(replicaA.keyFor("org_AbC")).toBe(`${keyPrefix}:{org_AbC}`);
    await replicaA.check("expiring", 60, 0);
    const one = await admin.pttl(replicaA.keyFor("expiring"));
    expect(one).toBeGreaterThan(0);
    expect(one).toBeLessThanOrEqual(1000);

    for (let i = 0; i < 59; i++) await replicaA.check("expiring", 60, 0);
    const drained = await admin.pttl(replicaA.keyFor("expiring"));
    expect(drained).toBeGreaterThan(55_000);
    expect(drained).toBeLessThanOrEqual(60_000);
    expect(await admin.pttl(replicaA.keyFor("never-seen"))).toBe(-2);
  });

  it("keeps tenants apart, including ids that differ only in case", async () => {
    for (let i = 0; i < 3; i++) await replicaA.check("org_AbC", 3, 0);
    expect((await replicaA.check("org_AbC", 3, 0)).allowed).toBe(false);
    expect((await replicaA.check("org_abc", 3, 0)).allowed).toBe(true);
  });

  it("rejects invalid limits before calling Redis", async () => {
    const error = await replicaA.check("bad", 1.5, 0).catch((e: unknown) => e);
    expect(isTenantryError(error, "invalid_argument")).toBe(true);
  });
});

describe.skipIf(!redisUp)("RedisStore: checks of several requests at once", () => {
  const keyPrefix = uniqueKeyPrefix("rl-cost");
  const store = new RedisStore({ url: REDIS_URL, keyPrefix });
  const admin = new Redis(REDIS_URL);

  afterAll(async () => {
    const keys = await admin.keys(`${keyPrefix}:*`);
    if (keys.length > 0) await admin.del(...keys);
    await Promise.all([store.close(), admin.quit()]);
  });

  it("decides a sequence of costs exactly as the in-memory store does", async () => {
    // 20/min + 5: one request earns back in 3 s, far longer than these calls take, so both stores
    // see the same instant and must agree call for call.
    const costs = [3, 10, 13, 1, 12, 5, 1, 1, 30, 2];
    const memory = new MemoryStore({ now: () => 1_000 });
    const fromRedis = [];
    for (const cost of costs) fromRedis.push(await store.check("parity", 20, 5, cost));
    const fromMemory = costs.map((cost) => memory.take("parity", 20, 5, cost));
    const view = (d: RateLimitDecision) => [d.allowed, d.limit, d.remaining];
    expect(fromRedis.map(view)).toEqual(fromMemory.map(view));
    expect(fromRedis.map((d) => d.allowed)).toEqual([
      true,
      true,
      false,
      true,
      false,
      true,
      true,
      true,
      false,
      true,
    ]);
  });

  it("is all or nothing under concurrency: ten checks of 4 on a capacity of 25 allow exactly six", async () => {
    const decisions = await Promise.all(
      Array.from({ length: 10 }, () => store.check("concurrent", 20, 5, 4)),
    );
    expect(decisions.filter((d) => d.allowed)).toHaveLength(6);
    // The 24 spent leave one request; a refused check of 4 spent none of it.
    expect((await store.check("concurrent", 20, 5, 1)).allowed).toBe(true);
    expect((await store.check("concurrent", 20, 5, 1)).allowed).toBe(false);
  });

  it("rejects a cost that is not an integer ≥ 1 before calling Redis", async () => {
    for (const cost of [0, 2.5]) {
      const error = await store.check("bad-cost", 20, 0, cost).catch((e: unknown) => e);
      expect(isTenantryError(error, "invalid_argument")).toBe(true);
    }
    expect(await admin.exists(store.keyFor("bad-cost"))).toBe(0);
  });
});
