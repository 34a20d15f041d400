import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { isTenantryError } from "../../src/errors.js";
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
