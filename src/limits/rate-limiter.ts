import type { RawConfig } from "../config/schema.js";
import { TenantryError } from "../errors.js";
import { FallbackStore } from "./fallback-store.js";
import { burstFor, type RateLimitDecision } from "./gcra.js";
import { rateLimitHeaders } from "./headers.js";
import { MemoryStore } from "./memory-store.js";
import { RedisStore } from "./redis-store.js";

export type { RateLimitDecision } from "./gcra.js";

/** `[rate_limit]` of `tenantry.toml`, parsed. */
export type RateLimitConfig = RawConfig["rate_limit"];

/**
 * Where rate-limit state lives. One call decides `cost` requests (default one) atomically, all or
 * none; `burst` is the absolute number of extra requests (see {@link burstFor}). Implementations:
 * {@link MemoryStore} (one replica), {@link RedisStore} (shared by all replicas),
 * {@link FallbackStore} (Redis with a policy for when Redis is unreachable).
 */
export interface RateLimitStore {
  check(tenantKey: string, limitPerMinute: number, burst: number, cost?: number): Promise<RateLimitDecision>;
  close(): Promise<void>;
}

/** A pino-compatible logger: only the two levels the limiter uses. */
export interface LimiterLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** The pipeline's rate-limit stage: a store plus the configured burst policy. */
export interface RateLimiter {
  readonly backend: RateLimitConfig["backend"];
  /**
   * Decides `cost` requests (default one; a JSON-RPC batch's calls) of `tenantKey`, all or none,
   * whose limit is `limitPerMinute` (an integer ≥ 1). One store round trip whatever the cost.
   */
  check(tenantKey: string, limitPerMinute: number, cost?: number): Promise<RateLimitDecision>;
  /** {@link check}, synchronous where the state is in this process (the memory backend): the request path. */
  decide(
    tenantKey: string,
    limitPerMinute: number,
    cost?: number,
  ): RateLimitDecision | Promise<RateLimitDecision>;
  /** Whether the shared store answers now (always `true` for the memory backend): `/readyz`. */
  reachable(): Promise<boolean>;
  close(): Promise<void>;
}

/** What {@link createRateLimiter} needs besides the config. */
export interface RateLimiterDeps {
  log: LimiterLog;
  /** Milliseconds, monotonic; for tests. Applies to the in-memory state only (Redis uses its own clock). */
  now?: () => number;
}

/**
 * Builds the rate limiter `[rate_limit]` describes. With `backend = "redis"`, an unreachable Redis
 * never means "unlimited": `on_backend_error = "deny"` denies with reason `backend_unavailable`,
 * `"local"` falls back to a per-replica in-memory limiter until Redis answers again.
 *
 * @example
 * const limiter = createRateLimiter(config.rate_limit, { log });
 * const decision = await limiter.check(tenant.tenantId, tenant.rateLimit);
 * if (!decision.allowed) throw rateLimitError(decision);
 */
export function createRateLimiter(config: RateLimitConfig, deps: RateLimiterDeps): RateLimiter {
  const memory = () =>
    new MemoryStore({
      maxTrackedTenants: config.max_tracked_tenants,
      ...(deps.now ? { now: deps.now } : {}),
    });
  if (config.backend === "memory") {
    const local = memory();
    return {
      backend: config.backend,
      check: (tenantKey, limitPerMinute, cost) =>
        local.check(tenantKey, limitPerMinute, burstFor(limitPerMinute, config.burst), cost),
      decide: (tenantKey, limitPerMinute, cost) =>
        local.take(tenantKey, limitPerMinute, burstFor(limitPerMinute, config.burst), cost),
      reachable: async () => true,
      close: () => local.close(),
    };
  }
  const redis = new RedisStore({ url: config.redis_url, keyPrefix: config.key_prefix });
  const store: RateLimitStore = new FallbackStore(redis, {
    onBackendError: config.on_backend_error,
    log: deps.log,
    ...(config.on_backend_error === "local" ? { local: memory() } : {}),
  });
  const check = (tenantKey: string, limitPerMinute: number, cost?: number) =>
    store.check(tenantKey, limitPerMinute, burstFor(limitPerMinute, config.burst), cost);
  return {
    backend: config.backend,
    check,
    decide: check,
    reachable: () => redis.ping(),
    close: () => store.close(),
  };
}

/**
 * The error for a denied decision: code `rate_limited` (HTTP 429) or `backend_unavailable` (503),
 * with `retryAfterSeconds` and the rate-limit `headers` in `details` for the server's mapper, and
 * the code's own message unless `message` is given.
 */
export function rateLimitError(decision: RateLimitDecision, message?: string): TenantryError {
  const headers = rateLimitHeaders(decision);
  return new TenantryError(decision.reason ?? "rate_limited", message, {
    details: { retryAfterSeconds: Number(headers["Retry-After"] ?? 1), headers },
  });
}
