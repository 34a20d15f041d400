import { isTenantryError } from "../errors.js";
import type { RateLimitDecision } from "./gcra.js";
import { MemoryStore } from "./memory-store.js";
import type { LimiterLog, RateLimitConfig, RateLimitStore } from "./rate-limiter.js";

/** Options of {@link FallbackStore}. */
export interface FallbackStoreOptions {
  /** `deny`: deny with reason `backend_unavailable`; `local`: use {@link local} meanwhile. */
  onBackendError: RateLimitConfig["on_backend_error"];
  log: LimiterLog;
  /** The per-replica store used while the primary fails (`local` only). Default a {@link MemoryStore}. */
  local?: RateLimitStore;
  /** Retry-After of a `backend_unavailable` denial. Default 1000 ms. */
  retryAfterMs?: number;
}

/**
 * Wraps a shared store (Redis) with what `on_backend_error` says to do when it fails. It is never
 * "unlimited": `deny` answers `{allowed: false, reason: "backend_unavailable"}` (the server maps
 * that to 503 with Retry-After), `local` limits per replica (so N replicas allow up to N× the limit
 * while degraded). Every request still tries the primary first, so shared limiting resumes as soon
 * as it answers. Transitions are logged once each (warn when degraded, info when recovered), not
 * per request.
 */
export class FallbackStore implements RateLimitStore {
  readonly #primary: RateLimitStore;
  readonly #local: RateLimitStore | undefined;
  readonly #options: FallbackStoreOptions;
  #degraded = false;

  constructor(primary: RateLimitStore, options: FallbackStoreOptions) {
    this.#primary = primary;
    this.#options = options;
    this.#local = options.onBackendError === "local" ? (options.local ?? new MemoryStore()) : undefined;
  }

  /** Whether the last check found the primary failing. */
  get degraded(): boolean {
    return this.#degraded;
  }

  async check(
    tenantKey: string,
    limitPerMinute: number,
    burst: number,
    cost = 1,
  ): Promise<RateLimitDecision> {
    let decision: RateLimitDecision;
    try {
      decision = await this.#primary.check(tenantKey, limitPerMinute, burst, cost);
    } catch (error) {
      // A bad limit is the caller's bug, not an outage.
      if (isTenantryError(error, "invalid_argument")) throw error;
      if (!this.#degraded) {
        this.#degraded = true;
        this.#options.log.warn(
          { err: error, onBackendError: this.#options.onBackendError },
          "rate limit backend unavailable; " +
            (this.#local ? "limiting per replica until it recovers" : "denying requests until it recovers"),
        );
      }
      if (this.#local) return this.#local.check(tenantKey, limitPerMinute, burst, cost);
      const retryAfterMs = this.#options.retryAfterMs ?? 1000;
      return {
        allowed: false,
        limit: limitPerMinute + burst,
        remaining: 0,
        resetMs: retryAfterMs,
        retryAfterMs,
        reason: "backend_unavailable",
      };
    }
    if (this.#degraded) {
      this.#degraded = false;
      this.#options.log.info({}, "rate limit backend recovered; shared limiting resumed");
    }
    return decision;
  }

  async close(): Promise<void> {
    await Promise.all([this.#primary.close(), this.#local?.close()]);
  }
}
