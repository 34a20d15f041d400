import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import { burstFor, emissionIntervalUs, gcraCheck, type RateLimitDecision } from "../../src/limits/gcra.js";

/** One tenant's GCRA state driven by a fake clock in milliseconds. */
function tenant(limitPerMinute: number, burst: number) {
  let tatUs = 0;
  let nowMs = 0;
  return {
    advance(ms: number) {
      nowMs += ms;
    },
    hit(): RateLimitDecision {
      const outcome = gcraCheck(tatUs, nowMs * 1000, limitPerMinute, burst);
      tatUs = outcome.tatUs;
      return outcome.decision;
    },
    /** Sends `n` requests at the current instant; returns how many were allowed. */
    burst(n: number): number {
      let allowed = 0;
      for (let i = 0; i < n; i++) if (this.hit().allowed) allowed++;
      return allowed;
    },
  };
}

describe("burstFor", () => {
  it("reads ≥ 1 as an absolute count and < 1 as a fraction of the limit, rounding down", () => {
    expect(burstFor(100, 10)).toBe(10);
    expect(burstFor(100, 10.9)).toBe(10);
    expect(burstFor(100, 1)).toBe(1);
    expect(burstFor(100, 0.5)).toBe(50);
    expect(burstFor(7, 0.5)).toBe(3);
    expect(burstFor(100, 0)).toBe(0);
    expect(burstFor(100, -1)).toBe(0);
    expect(burstFor(100, Number.NaN)).toBe(0);
  });
});

describe("gcraCheck", () => {
  it("allows exactly limit + burst at once, then one per 60/limit seconds", () => {
    const t = tenant(60, 10);
    const first = t.hit();
    expect(first).toEqual({ allowed: true, limit: 70, remaining: 69, resetMs: 1000, retryAfterMs: 0 });
    expect(t.burst(69)).toBe(69);

    const denied = t.hit();
    expect(denied).toEqual({
      allowed: false,
      limit: 70,
      remaining: 0,
      resetMs: 70_000,
      retryAfterMs: 1000,
      reason: "rate_limited",
    });

    t.advance(999);
    expect(t.hit().allowed).toBe(false);
    t.advance(1);
    expect(t.burst(5)).toBe(1);
  });

  it("regains one request per interval and full capacity only after (limit + burst) intervals", () => {
    const t = tenant(60, 10);
    expect(t.burst(100)).toBe(70);
    t.advance(60_000);
    expect(t.burst(100)).toBe(60); // a minute refills the per-minute limit, not the burst on top
    t.advance(70_000);
    const first = t.hit();
    expect(first.remaining).toBe(69);
    expect(t.burst(100)).toBe(69);
  });

  it("reports remaining so that exactly that many more requests succeed now", () => {
    const t = tenant(30, 5);
    t.burst(12);
    t.advance(4321);
    const decision = t.hit();
    expect(decision.allowed).toBe(true);
    expect(t.burst(100)).toBe(decision.remaining);
  });

  it("does not refill one request per second whatever the limit (seed defect 5)", () => {
    // 10/min: 10 s earns 1 request (the seed's per-second refill gave 10).
    const slow = tenant(10, 0);
    expect(slow.burst(50)).toBe(10);
    slow.advance(10_000);
    expect(slow.burst(50)).toBe(1);
    slow.advance(49_000); // 59 s after the burst: 9 earned in total
    expect(slow.burst(50)).toBe(8);

    // 600/min: 1 s earns 10 requests (the seed gave 1).
    const fast = tenant(600, 0);
    expect(fast.burst(1000)).toBe(600);
    fast.advance(1000);
    expect(fast.burst(1000)).toBe(10);

    // Hammered every 100 ms for ten minutes, 10/min allows 10 + 100, not 10 + 600.
    const hammered = tenant(10, 0);
    let allowed = 0;
    for (let ms = 0; ms <= 600_000; ms += 100) {
      if (hammered.hit().allowed) allowed++;
      hammered.advance(100);
    }
    expect(allowed).toBe(110);
  });

  it("keeps an exact burst for limits that do not divide a minute", () => {
    for (const [limit, burst] of [
      [7, 0],
      [7, 3],
      [13, 1],
      [6001, 0],
    ] as const) {
      const t = tenant(limit, burst);
      expect(t.burst(limit + burst + 5)).toBe(limit + burst);
      t.advance(Math.ceil(emissionIntervalUs(limit) / 1000));
      expect(t.burst(5)).toBe(1);
    }
  });

  it("rejects limits that are not integers ≥ 1 and bursts that are not integers ≥ 0", () => {
    for (const [limit, burst] of [
      [0, 0],
      [-1, 0],
      [1.5, 0],
      [Number.NaN, 0],
      [10, -1],
      [10, 0.5],
      [1, 2 ** 40],
    ] as const) {
      let caught: unknown;
      try {
        gcraCheck(0, 0, limit, burst);
      } catch (error) {
        caught = error;
      }
      expect(isTenantryError(caught, "invalid_argument"), `${limit}/${burst}`).toBe(true);
    }
  });
});

describe("gcraCheck properties", () => {
  const policy = fc.record({
    limit: fc.integer({ min: 1, max: 600 }),
    burst: fc.integer({ min: 0, max: 50 }),
  });
  const gapsUs = fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 3_000_000 })), {
    minLength: 1,
    maxLength: 250,
  });

  it("never allows more than capacity + elapsed × rate in any window", () => {
    fc.assert(
      fc.property(policy, gapsUs, ({ limit, burst }, gaps) => {
        let tat = 0;
        let now = 0;
        const allowedAt: number[] = [];
        for (const gap of gaps) {
          now += gap;
          const outcome = gcraCheck(tat, now, limit, burst);
          tat = outcome.tatUs;
          if (outcome.decision.allowed) allowedAt.push(now);
        }
        for (let i = 0; i < allowedAt.length; i++) {
          for (let j = i; j < allowedAt.length; j++) {
            const elapsedUs = allowedAt[j]! - allowedAt[i]!;
            expect(j - i + 1).toBeLessThanOrEqual(limit + burst + (elapsedUs * limit) / 60_000_000);
          }
        }
      }),
    );
  });

  it("allows a denied request exactly when retryAfterMs has passed, not a microsecond earlier", () => {
    fc.assert(
      fc.property(policy, gapsUs, ({ limit, burst }, gaps) => {
        let tat = 0;
        let now = 0;
        for (const gap of gaps) {
          now += gap;
          const outcome = gcraCheck(tat, now, limit, burst);
          if (!outcome.decision.allowed) {
            // ms are µs / 1000 in floating point: round back to the whole µs they came from.
            const retryUs = Math.round(outcome.decision.retryAfterMs * 1000);
            expect(retryUs).toBeGreaterThan(0);
            expect(gcraCheck(tat, now + retryUs - 1, limit, burst).decision.allowed).toBe(false);
            expect(gcraCheck(tat, now + retryUs, limit, burst).decision.allowed).toBe(true);
          }
          tat = outcome.tatUs;
        }
      }),
    );
  });

  it("always allows requests spaced one interval apart", () => {
    fc.assert(
      fc.property(policy, fc.integer({ min: 1, max: 300 }), ({ limit, burst }, count) => {
        const interval = emissionIntervalUs(limit);
        let tat = 0;
        for (let i = 0; i < count; i++) {
          const outcome = gcraCheck(tat, i * interval, limit, burst);
          expect(outcome.decision.allowed).toBe(true);
          tat = outcome.tatUs;
        }
      }),
    );
  });
});

describe("gcraCheck of several requests at once (a batch's calls)", () => {
  const policy = fc.record({
    limit: fc.integer({ min: 1, max: 600 }),
    burst: fc.integer({ min: 0, max: 50 }),
  });
  /** Steps of (gap µs, cost): costs around and above typical capacities. */
  const steps = fc.array(
    fc.record({ gap: fc.integer({ min: 0, max: 3_000_000 }), cost: fc.integer({ min: 1, max: 120 }) }),
    { minLength: 1, maxLength: 100 },
  );

  it("allows k requests exactly when k single checks in a row would all pass, with the same state after", () => {
    fc.assert(
      fc.property(policy, steps, ({ limit, burst }, plan) => {
        let tat = 0;
        let now = 0;
        for (const { gap, cost } of plan) {
          now += gap;
          const many = gcraCheck(tat, now, limit, burst, cost);
          let singleTat = tat;
          let all = true;
          let last: RateLimitDecision | undefined;
          for (let i = 0; i < cost && all; i++) {
            const one = gcraCheck(singleTat, now, limit, burst);
            all = one.decision.allowed;
            if (all) singleTat = one.tatUs;
            last = one.decision;
          }
          expect(many.decision.allowed).toBe(all);
          if (all) {
            expect(many.tatUs).toBe(singleTat);
            expect(many.decision.remaining).toBe(last?.remaining);
          } else {
            // All or nothing: a refused check spends nothing.
            expect(many.tatUs).toBe(Math.max(tat, now));
            expect(many.decision.remaining).toBe(0);
          }
          tat = many.tatUs;
        }
      }),
    );
  });

  it("allows a refused check of k ≤ capacity exactly when its retryAfterMs has passed", () => {
    fc.assert(
      fc.property(policy, steps, ({ limit, burst }, plan) => {
        let tat = 0;
        let now = 0;
        for (const { gap, cost: wanted } of plan) {
          now += gap;
          const cost = Math.min(wanted, limit + burst);
          const outcome = gcraCheck(tat, now, limit, burst, cost);
          if (!outcome.decision.allowed) {
            const retryUs = Math.round(outcome.decision.retryAfterMs * 1000);
            expect(retryUs).toBeGreaterThan(0);
            expect(gcraCheck(tat, now + retryUs - 1, limit, burst, cost).decision.allowed).toBe(false);
            expect(gcraCheck(tat, now + retryUs, limit, burst, cost).decision.allowed).toBe(true);
          }
          tat = outcome.tatUs;
        }
      }),
    );
  });

  it("never allows more requests than the capacity at once; such a refusal waits for full capacity", () => {
    const t = gcraCheck(0, 0, 60, 4, 65);
    expect(t.decision).toMatchObject({ allowed: false, limit: 64, remaining: 0, retryAfterMs: 0 });
    expect(t.tatUs).toBe(0);
    const full = gcraCheck(0, 0, 60, 4, 64);
    expect(full.decision).toMatchObject({ allowed: true, remaining: 0 });
    // In debt by 64 s: a check of more than the capacity waits until capacity is full (64 s).
    expect(gcraCheck(full.tatUs, 0, 60, 4, 100).decision.retryAfterMs).toBe(64_000);
  });

  it("rejects a cost that is not an integer ≥ 1 before touching state", () => {
    for (const cost of [0, -1, 1.5, Number.NaN, 2 ** 40]) {
      let caught: unknown;
      try {
        gcraCheck(0, 0, 1, 0, cost);
      } catch (error) {
        caught = error;
      }
      expect(isTenantryError(caught, "invalid_argument"), String(cost)).toBe(true);
    }
  });
});
