import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import { FallbackStore } from "../../src/limits/fallback-store.js";
import type { RateLimitDecision } from "../../src/limits/gcra.js";
import type { LimiterLog } from "../../src/limits/rate-limiter.js";
import { RedisStore } from "../../src/limits/redis-store.js";
import { type PrivateRedis, redisServerGate, startPrivateRedis, uniqueKeyPrefix } from "../support/redis.js";

const canSpawn = redisServerGate();

function recordingLog() {
  const entries: { level: "warn" | "info"; msg: string; obj: object }[] = [];
  const log: LimiterLog = {
    warn: (obj, msg) => entries.push({ level: "warn", msg, obj }),
    info: (obj, msg) => entries.push({ level: "info", msg, obj }),
  };
  return { log, entries, count: (level: "warn" | "info") => entries.filter((e) => e.level === level).length };
}

/** Calls `probe` until `done` holds for its result (real outages take real time to notice). */
async function until(probe: () => Promise<RateLimitDecision>, done: (d: RateLimitDecision) => boolean) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const decision = await probe();
    if (done(decision)) return decision;
    if (Date.now() > deadline) throw new Error(`gave up waiting; last decision ${JSON.stringify(decision)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function countAllowed(stores: FallbackStore[], tenant: string, n: number, limit: number) {
  let allowed = 0;
  for (let i = 0; i < n; i++) {
    const store = stores[i % stores.length]!;
    if ((await store.check(tenant, limit, 0)).allowed) allowed++;
  }
  return allowed;
}

describe.skipIf(!canSpawn)("FallbackStore with Redis stopped and restarted", () => {
  let redis: PrivateRedis;
  const opened: FallbackStore[] = [];

  beforeAll(async () => {
    redis = await startPrivateRedis();
  });
  afterAll(async () => {
    await Promise.all(opened.map((store) => store.close()));
    await redis?.stop();
  });

  function replica(onBackendError: "deny" | "local", keyPrefix: string) {
    const recorder = recordingLog();
    const primary = new RedisStore({ url: redis.url, keyPrefix, maxReconnectDelayMs: 200 });
    const store = new FallbackStore(primary, { onBackendError, log: recorder.log });
    opened.push(store);
    return { store, primary, ...recorder };
  }

  it("deny: denies with reason backend_unavailable, logs each transition once, then resumes", async () => {
    const { store, primary, count, entries } = replica("deny", uniqueKeyPrefix("deny"));
    expect(await store.check("acme", 60, 0)).toMatchObject({ allowed: true });

    await redis.stop();
    await until(
      () => store.check("probe", 60, 0),
      (d) => d.reason === "backend_unavailable",
    );
    for (let i = 0; i < 5; i++) {
      expect(await store.check("acme", 60, 0)).toEqual({
        allowed: false,
        limit: 60,
        remaining: 0,
        resetMs: 1000,
        retryAfterMs: 1000,
        reason: "backend_unavailable",
      });
    }
    expect(store.degraded).toBe(true);
    expect(count("warn")).toBe(1);
    expect(entries[0]?.obj).toMatchObject({ onBackendError: "deny" });

    await redis.start();
    await until(
      () => store.check("probe", 60, 0),
      (d) => d.reason !== "backend_unavailable",
    );
    expect(store.degraded).toBe(false);
    expect(count("info")).toBe(1);
    expect(count("warn")).toBe(1);

    // Shared state again: the decision came from the restarted (empty) Redis.
    expect(await store.check("acme", 60, 0)).toMatchObject({ allowed: true, remaining: 59 });
    const admin = new Redis(redis.url);
    try {
      expect(await admin.pttl(primary.keyFor("acme"))).toBeGreaterThan(0);
    } finally {
      admin.disconnect();
    }
  });

  it("local: limits per replica while Redis is down, never unlimited; shares again once it is back", async () => {
    const keyPrefix = uniqueKeyPrefix("local");
    const a = replica("local", keyPrefix);
    const b = replica("local", keyPrefix);
    expect(await countAllowed([a.store, b.store], "warmup", 2, 60)).toBe(2);

    await redis.stop();
    for (const r of [a, b]) {
      await until(
        () => r.store.check("probe", 1000, 0),
        () => r.store.degraded,
      );
    }
    // 5/min per replica: each replica admits its own 5, no more.
    expect(await countAllowed([a.store], "acme", 20, 5)).toBe(5);
    expect(await countAllowed([b.store], "acme", 20, 5)).toBe(5);
    expect((await a.store.check("acme", 5, 0)).reason).toBe("rate_limited");
    expect(a.count("warn")).toBe(1);
    expect(b.count("warn")).toBe(1);

    await redis.start();
    for (const r of [a, b]) {
      await until(
        () => r.store.check("probe", 1000, 0),
        () => !r.store.degraded,
      );
      expect(r.count("info")).toBe(1);
    }
    // Back on Redis, both replicas share one limit of 5 for a fresh tenant.
    expect(await countAllowed([a.store, b.store], "globex", 20, 5)).toBe(5);
  });

  it("recovers from a flushed script cache (EVALSHA falls back to EVAL)", async () => {
    const { store, count } = replica("deny", uniqueKeyPrefix("noscript"));
    expect((await store.check("acme", 60, 0)).allowed).toBe(true);
    const admin = new Redis(redis.url);
    try {
      await admin.script("FLUSH");
    } finally {
      admin.disconnect();
    }
    expect(await store.check("acme", 60, 0)).toMatchObject({ allowed: true, remaining: 58 });
    expect(count("warn")).toBe(0);
  });

  it("passes invalid limits through as errors instead of treating them as outages", async () => {
    const { store, count } = replica("deny", uniqueKeyPrefix("invalid"));
    const error = await store.check("acme", 0, 0).catch((e: unknown) => e);
    expect(isTenantryError(error, "invalid_argument")).toBe(true);
    expect(store.degraded).toBe(false);
    expect(count("warn")).toBe(0);
  });
});
