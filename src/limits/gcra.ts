import { TenantryError } from "../errors.js";

/**
 * The Generic Cell Rate Algorithm (GCRA), as pure arithmetic.
 *
 * A tenant limited to `N` requests per minute with a burst of `B` may make `N + B` requests at
 * once, then one more every `60 / N` seconds: capacity refills continuously, a fraction of a
 * request at a time, never "one token per second" whatever the limit (the seed's defect 5).
 *
 * The whole state of a tenant is one number, its theoretical arrival time (TAT): the instant at
 * which its capacity would be full again. With emission interval `T = 60 s / N` and tolerance
 * `τ = T · (N + B − 1)`, a request at `now` is allowed iff `max(TAT, now) − now ≤ τ`, and then
 * moves TAT on by `T`. From a fresh state (TAT ≤ now) that admits exactly `N + B` requests at once.
 *
 * Time is counted in whole microseconds so that every quantity is an exact integer (a double holds
 * integers exactly up to 2^53, about 285 years of microseconds). `T` is rounded *up* to a whole
 * microsecond, so a limit that does not divide a minute is honoured at most a few parts per
 * billion too strictly, never too leniently.
 *
 * A check may cost several requests at once (a JSON-RPC batch of `k` calls): it is allowed iff the
 * last of the `k` would be, `max(TAT, now) + (k − 1)·T − now ≤ τ`, and then moves TAT on by `k·T`.
 * That is all or nothing, and the same as `k` single checks in a row when they would all pass.
 */

/** The outcome of one rate-limit check. Times are milliseconds and may be fractional. */
export interface RateLimitDecision {
  readonly allowed: boolean;
  /** Capacity: the most requests a tenant with full capacity may make at once (`limit + burst`). */
  readonly limit: number;
  /** Requests that could be made right now, after this one (these, for a check of several). */
  readonly remaining: number;
  /** Milliseconds until capacity is full again. */
  readonly resetMs: number;
  /** Milliseconds until a retry can succeed; `0` when allowed. */
  readonly retryAfterMs: number;
  /**
   * Why a request was denied, as a {@link TenantryError} code: `rate_limited` (over the rate) or
   * `backend_unavailable` (the shared limiter could not be asked and `on_backend_error = "deny"`).
   * Absent when allowed.
   */
  readonly reason?: "rate_limited" | "backend_unavailable";
}

/** A decision and the tenant's next theoretical arrival time (µs). */
export interface GcraOutcome {
  readonly decision: RateLimitDecision;
  readonly tatUs: number;
}

const MINUTE_US = 60_000_000;
/** Largest `capacity · T` accepted: ~35 years, so `now + debt` stays an exact integer in Lua too. */
const MAX_WINDOW_US = 2 ** 50;

/**
 * The burst (extra requests on top of the per-minute limit) that the config's `burst` setting
 * means for `limitPerMinute`: an absolute count when `burstSetting ≥ 1`, a fraction of the limit
 * when it is below 1. Rounded down, so the configured burst is never exceeded.
 *
 * @example
 * burstFor(100, 0.5); // 50
 * burstFor(100, 10);  // 10
 * burstFor(100, 0);   // 0
 */
export function burstFor(limitPerMinute: number, burstSetting: number): number {
  if (!(burstSetting > 0) || !(limitPerMinute > 0)) return 0;
  const burst = Math.floor(burstSetting >= 1 ? burstSetting : limitPerMinute * burstSetting);
  return Number.isSafeInteger(burst) ? burst : 0;
}

/** The emission interval `T` in whole microseconds: the time one request's capacity takes to refill. */
export function emissionIntervalUs(limitPerMinute: number): number {
  return Math.ceil(MINUTE_US / limitPerMinute);
}

/**
 * Throws `invalid_argument` unless `limitPerMinute` is an integer ≥ 1 and `burst` an integer ≥ 0
 * whose window fits the exact-integer range. Stores call it before touching state.
 */
export function assertGcraParams(limitPerMinute: number, burst: number): void {
  if (
    !Number.isSafeInteger(limitPerMinute) ||
    limitPerMinute < 1 ||
    !Number.isSafeInteger(burst) ||
    burst < 0 ||
    (limitPerMinute + burst) * emissionIntervalUs(limitPerMinute) > MAX_WINDOW_US
  ) {
    throw new TenantryError(
      "invalid_argument",
      `Rate limit must be an integer ≥ 1 per minute with an integer burst ≥ 0 (got ${limitPerMinute}, ${burst}).`,
    );
  }
}

/**
 * Throws `invalid_argument` unless `cost` (requests decided at once) is an integer ≥ 1 whose
 * `cost · T` fits the exact-integer range. Stores call it, after {@link assertGcraParams}, before
 * touching state.
 */
export function assertGcraCost(cost: number, limitPerMinute: number): void {
  if (!Number.isSafeInteger(cost) || cost < 1 || cost * emissionIntervalUs(limitPerMinute) > MAX_WINDOW_US) {
    throw new TenantryError(
      "invalid_argument",
      `A rate-limit check must cost an integer number of requests ≥ 1 (got ${cost}).`,
    );
  }
}

/**
 * Decides `cost` requests (default one) at `nowUs` for a tenant whose TAT is `tatUs` (any value
 * ≤ `nowUs`, such as 0, means a fresh tenant with full capacity): all of them or none. Returns
 * the decision and the TAT to store.
 */
export function gcraCheck(
  tatUs: number,
  nowUs: number,
  limitPerMinute: number,
  burst: number,
  cost = 1,
): GcraOutcome {
  assertGcraParams(limitPerMinute, burst);
  assertGcraCost(cost, limitPerMinute);
  const interval = emissionIntervalUs(limitPerMinute);
  const tolerance = interval * (limitPerMinute + burst - 1);
  const base = Math.max(tatUs, nowUs);
  const debt = base - nowUs;
  if (debt + (cost - 1) * interval <= tolerance) {
    const next = base + cost * interval;
    return { tatUs: next, decision: gcraDecision(true, next - nowUs, limitPerMinute, burst) };
  }
  return { tatUs: base, decision: gcraDecision(false, debt, limitPerMinute, burst, cost) };
}

/**
 * Builds the decision from what the algorithm left behind: whether the request was allowed and
 * the tenant's debt `TAT − now` (µs) after it. Shared by the memory store and the Redis store,
 * whose Lua script does the comparison server-side and returns the same two numbers. `cost` (the
 * requests the check was for) sets a denial's `retryAfterMs`: when all of them would fit. A cost
 * above the capacity never fits; its `retryAfterMs` is then the time until capacity is full.
 */
export function gcraDecision(
  allowed: boolean,
  debtUs: number,
  limitPerMinute: number,
  burst: number,
  cost = 1,
): RateLimitDecision {
  const interval = emissionIntervalUs(limitPerMinute);
  const capacity = limitPerMinute + burst;
  const tolerance = interval * (capacity - 1);
  const debt = Math.max(debtUs, 0);
  if (allowed) {
    const remaining = Math.floor((tolerance - debt) / interval) + 1;
    return {
      allowed: true,
      limit: capacity,
      remaining: Math.min(capacity, Math.max(0, remaining)),
      resetMs: debt / 1000,
      retryAfterMs: 0,
    };
  }
  return {
    allowed: false,
    limit: capacity,
    remaining: 0,
    resetMs: debt / 1000,
    retryAfterMs: Math.max(0, debt + (Math.min(cost, capacity) - 1) * interval - tolerance) / 1000,
    reason: "rate_limited",
  };
}
