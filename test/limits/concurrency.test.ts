import { describe, expect, it } from "vitest";
import { InFlightLimiter } from "../../src/limits/concurrency.js";

describe("InFlightLimiter", () => {
  it("refuses a tenant at its cap while another tenant still acquires", () => {
    const limiter = new InFlightLimiter(2);
    const a1 = limiter.tryAcquire("a");
    const a2 = limiter.tryAcquire("a");
    expect(a1).toBeTypeOf("function");
    expect(a2).toBeTypeOf("function");
    expect(limiter.tryAcquire("a")).toBeUndefined();
    expect(limiter.tryAcquire("b")).toBeTypeOf("function");
    a1?.();
    expect(limiter.tryAcquire("a")).toBeTypeOf("function");
  });

  it("releases idempotently and forgets tenants with nothing in flight", () => {
    const limiter = new InFlightLimiter(1);
    const release = limiter.tryAcquire("a");
    const other = limiter.tryAcquire("b");
    expect(limiter.trackedTenants).toBe(2);
    release?.();
    release?.();
    expect(limiter.inFlight("a")).toBe(0);
    const again = limiter.tryAcquire("a");
    expect(again).toBeTypeOf("function");
    release?.(); // a stale release must not free the new holder's slot
    expect(limiter.tryAcquire("a")).toBeUndefined();
    again?.();
    other?.();
    expect(limiter.trackedTenants).toBe(0);
  });

  it("treats 0 as no cap and tracks nothing", () => {
    const limiter = new InFlightLimiter(0);
    for (let i = 0; i < 1000; i++) expect(limiter.tryAcquire("a")).toBeTypeOf("function");
    expect(limiter.trackedTenants).toBe(0);
  });

  it("rejects a negative or fractional cap", () => {
    expect(() => new InFlightLimiter(-1)).toThrow(RangeError);
    expect(() => new InFlightLimiter(1.5)).toThrow(RangeError);
  });
});
