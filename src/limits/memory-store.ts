import { type GcraOutcome, gcraCheck, type RateLimitDecision } from "./gcra.js";
import type { RateLimitStore } from "./rate-limiter.js";

/** Options of {@link MemoryStore}. */
export interface MemoryStoreOptions {
  /** Most tenants whose state is kept; the least recently used is evicted first. Default 100 000. */
  maxTrackedTenants?: number;
  /** Milliseconds from a monotonic clock. Default `performance.now()`. */
  now?: () => number;
}

/**
 * Rate-limit state in this process: one number (the GCRA TAT, µs) per tenant in a `Map` kept in
 * least-recently-used order. Bounded: past `maxTrackedTenants` the least recently used tenant is
 * dropped; and a TAT in the past means "full capacity", exactly like no entry, so such entries are
 * dropped as they are met. Evicting a tenant still in debt would hand it fresh capacity; with LRU
 * order that takes more distinct active tenants than the bound, so size the bound above that.
 */
export class MemoryStore implements RateLimitStore {
  readonly #tats = new Map<string, number>();
  readonly #max: number;
  readonly #now: () => number;

  constructor(options: MemoryStoreOptions = {}) {
    this.#max = Math.max(1, options.maxTrackedTenants ?? 100_000);
    this.#now = options.now ?? (() => performance.now());
  }

  /** Tenants currently tracked. */
  get size(): number {
    return this.#tats.size;
  }

  /** {@link check} without the promise, for callers on the hot path. */
  take(tenantKey: string, limitPerMinute: number, burst: number, cost = 1): RateLimitDecision {
    const nowUs = Math.floor(this.#now() * 1000);
    const tats = this.#tats;
    const previous = tats.get(tenantKey);
    const outcome: GcraOutcome = gcraCheck(previous ?? 0, nowUs, limitPerMinute, burst, cost);
    // Re-inserting moves the key to the end: Map iteration order is our LRU order.
    if (previous !== undefined) tats.delete(tenantKey);
    if (outcome.tatUs > nowUs) tats.set(tenantKey, outcome.tatUs);
    this.#sweep(nowUs);
    return outcome.decision;
  }

  check(tenantKey: string, limitPerMinute: number, burst: number, cost = 1): Promise<RateLimitDecision> {
    try {
      return Promise.resolve(this.take(tenantKey, limitPerMinute, burst, cost));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  close(): Promise<void> {
    this.#tats.clear();
    return Promise.resolve();
  }

  /** Drops the oldest entries while they have fully refilled, then evicts down to the bound. O(1) amortised. */
  #sweep(nowUs: number): void {
    const tats = this.#tats;
    // Two per call, so idle entries drain faster than new ones can arrive.
    for (let i = 0; i < 2; i++) {
      const oldest = tats.entries().next();
      if (oldest.done || oldest.value[1] > nowUs) break;
      tats.delete(oldest.value[0]);
    }
    while (tats.size > this.#max) {
      const oldest = tats.keys().next();
      if (oldest.done) break;
      tats.delete(oldest.value);
    }
  }
}
