import { describe, expect, it } from "vitest";
import { rateLimitSchema } from "../../src/config/schema.js";
import { createRateLimiter, type LimiterLog } from "../../src/limits/rate-limiter.js";
import { REDIS_URL, redisGate, uniqueKeyPrefix } from "../support/redis.js";

const redisUp = await redisGate();

const silent: LimiterLog = { warn: () => {}, info: () => {} };

async function countAllowed(check: () => Promise<{ allowed: boolean }>, n: number): Promise<number> {
  let allowed = 0;
  for (let i = 0; i < n; i++) if ((await check()).allowed) allowed++;
  return allowed;
}

describe("createRateLimiter", () => {
  it("memory: applies the configured burst as a fraction of each tenant's limit", async () => {
    let now = 0;
    const limiter = createRateLimiter(rateLimitSchema.parse({ burst: 0.5 }), { log: silent, now: () => now });
    expect(limiter.backend).toBe("memory");
    expect(await countAllowed(() => limiter.check("acme", 10), 50)).toBe(15);
    expect(await countAllowed(() => limiter.check("globex", 100), 500)).toBe(150);
    now += 6000;
    expect(await countAllowed(() => limiter.check("acme", 10), 50)).toBe(1);
    await limiter.close();
  });

  it("memory: applies an absolute burst", async () => {
    const limiter = createRateLimiter(rateLimitSchema.parse({ burst: 3 }), { log: silent, now: () => 0 });
    expect(await countAllowed(() => limiter.check("acme", 10), 50)).toBe(13);
  });

  it("redis: an unreachable Redis never means unlimited", async () => {
    const config = rateLimitSchema.parse({
      backend: "redis",
      redis_url: "redis://127.0.0.1:1", // nothing listens on port 1
      on_backend_error: "deny",
    });
    const warnings: string[] = [];
    const limiter = createRateLimiter(config, {
      log: { warn: (_, msg) => warnings.push(msg), info: () => {} },
    });
    try {
      const decision = await limiter.check("acme", 100);
      expect(decision).toMatchObject({ allowed: false, reason: "backend_unavailable" });
      expect(warnings).toHaveLength(1);
    } finally {
      await limiter.close();
    }
  });

  describe.skipIf(!redisUp)("with Redis", () => {
    it("redis: limits through Redis from the first request", async () => {
      const config = rateLimitSchema.parse({
        backend: "redis",
        redis_url: REDIS_URL,
        key_prefix: uniqueKeyPrefix("factory"),
        burst: 2,
      });
      const limiter = createRateLimiter(config, { log: silent });
      try {
        expect(limiter.backend).toBe("redis");
        const first = await limiter.check("acme", 30);
        expect(first).toMatchObject({ allowed: true, limit: 32, remaining: 31 });
        expect(await countAllowed(() => limiter.check("acme", 30), 40)).toBe(31);
      } finally {
        await limiter.close();
      }
    });
  });
});
