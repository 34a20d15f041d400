import { Redis } from "ioredis";
import {
  assertGcraCost,
  assertGcraParams,
  emissionIntervalUs,
  gcraDecision,
  type RateLimitDecision,
} from "./gcra.js";
import type { RateLimitStore } from "./rate-limiter.js";

/**
 * GCRA as one atomic script (see gcra.ts for the algorithm). KEYS[1] holds the TAT in whole
 * microseconds of Redis server time, so replicas with skewed clocks still share one limit; it
 * expires once capacity is full again. ARGV: interval, tolerance, cost (requests decided at once,
 * all or none). Returns {allowed (0|1), debt µs after the request}.
 * Redis ≥ 5 replicates a script's effects, not the script, so calling TIME here is safe.
 */
const GCRA_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then tat = now end
local debt = tat - now
if debt + (cost - 1) * interval > tolerance then
  return {0, debt}
end
local after = debt + cost * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat + cost * interval), 'PX', string.format('%.0f', math.ceil(after / 1000)))
return {1, after}
`;

interface GcraCommand {
  tenantryGcra(key: string, intervalUs: number, toleranceUs: number, cost: number): Promise<[number, number]>;
}

/** Options of {@link RedisStore}. */
export interface RedisStoreOptions {
  /** `redis://` or `rediss://` URL. */
  url: string;
  /** Keys are `${keyPrefix}:{${tenantKey}}` (a hash tag, so Redis Cluster keeps each tenant on one slot). */
  keyPrefix?: string;
  /** Default 1000 ms. The first checks after start-up wait up to this long for the connection. */
  connectTimeoutMs?: number;
  /** Default 500 ms: a check never waits longer than this on Redis. */
  commandTimeoutMs?: number;
  /** Cap of the reconnect back-off. Default 2000 ms. Reconnection is retried forever. */
  maxReconnectDelayMs?: number;
}

/**
 * Rate-limit state in Redis, shared by every replica: one `EVALSHA` per check, whatever it costs
 * (ioredis falls back to `EVAL` after `NOSCRIPT`, e.g. once Redis restarted). Fails fast while
 * Redis is unreachable (no offline queue; a command timeout) and reconnects in the background
 * forever, so shared limiting resumes by itself. A failed check rejects; wrap the store in a
 * {@link FallbackStore} to decide what that means.
 */
export class RedisStore implements RateLimitStore {
  readonly #client: Redis;
  readonly #prefix: string;
  #startup: Promise<void> | undefined;

  constructor(options: RedisStoreOptions) {
    const connectTimeout = options.connectTimeoutMs ?? 1000;
    const maxDelay = options.maxReconnectDelayMs ?? 2000;
    this.#prefix = options.keyPrefix ?? "tenantry:rl";
    this.#client = new Redis(options.url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout,
      commandTimeout: options.commandTimeoutMs ?? 500,
      retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 10), maxDelay),
    });
    // Errors surface through rejected checks; the fallback store logs state transitions.
    this.#client.on("error", () => {});
    this.#client.defineCommand("tenantryGcra", { numberOfKeys: 1, lua: GCRA_LUA });
    this.#startup = this.#firstConnection(connectTimeout);
  }

  /** The Redis key holding a tenant's state. */
  keyFor(tenantKey: string): string {
    return `${this.#prefix}:{${tenantKey}}`;
  }

  async check(
    tenantKey: string,
    limitPerMinute: number,
    burst: number,
    cost = 1,
  ): Promise<RateLimitDecision> {
    assertGcraParams(limitPerMinute, burst);
    assertGcraCost(cost, limitPerMinute);
    if (this.#startup) await this.#startup;
    const interval = emissionIntervalUs(limitPerMinute);
    const tolerance = interval * (limitPerMinute + burst - 1);
    const [allowed, debtUs] = await (this.#client as unknown as GcraCommand).tenantryGcra(
      this.keyFor(tenantKey),
      interval,
      tolerance,
      cost,
    );
    return gcraDecision(allowed === 1, debtUs, limitPerMinute, burst, cost);
  }

  /** Whether Redis answers a PING now (within the command timeout): `/readyz`. */
  async ping(): Promise<boolean> {
    if (this.#startup) await this.#startup;
    try {
      return (await this.#client.ping()) === "PONG";
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.#client.status === "ready") {
      try {
        await this.#client.quit();
        return;
      } catch {
        // fall through to a hard disconnect
      }
    }
    this.#client.disconnect();
  }

  /**
   * Without an offline queue, commands sent before the first connection fail at once; let the
   * first checks wait for its outcome (bounded), so a fresh replica does not start by denying
   * everyone while its connection is still being set up.
   */
  #firstConnection(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        for (const event of ["ready", "error", "end"]) this.#client.off(event, done);
        this.#startup = undefined;
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      timer.unref();
      for (const event of ["ready", "error", "end"]) this.#client.once(event, done);
    });
  }
}
