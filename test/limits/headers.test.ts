import { describe, expect, it } from "vitest";
import { rateLimitHeaders } from "../../src/limits/headers.js";
import { rateLimitError } from "../../src/limits/rate-limiter.js";

describe("rateLimitHeaders", () => {
  it("describes an allowed decision with the structured-field RateLimit headers", () => {
    const headers = rateLimitHeaders({
      allowed: true,
      limit: 110,
      remaining: 42,
      resetMs: 16_200,
      retryAfterMs: 0,
    });
    expect(headers).toEqual({
      "RateLimit-Policy": '"default";q=110;w=60',
      RateLimit: '"default";r=42;t=17',
    });
  });

  it("adds Retry-After in whole seconds, rounded up and at least 1, when denied", () => {
    const denied = {
      allowed: false,
      limit: 70,
      remaining: 0,
      resetMs: 70_000,
      retryAfterMs: 1000.5,
      reason: "rate_limited",
    } as const;
    expect(rateLimitHeaders(denied, 120)).toEqual({
      "RateLimit-Policy": '"default";q=70;w=120',
      RateLimit: '"default";r=0;t=70',
      "Retry-After": "2",
    });
    expect(rateLimitHeaders({ ...denied, retryAfterMs: 0.001 })["Retry-After"]).toBe("1");
  });

  it("turns a denial into a TenantryError carrying its code, Retry-After and headers", () => {
    const error = rateLimitError({
      allowed: false,
      limit: 10,
      remaining: 0,
      resetMs: 1000,
      retryAfterMs: 1000,
      reason: "backend_unavailable",
    });
    expect(error.code).toBe("backend_unavailable");
    expect(error.details).toMatchObject({ retryAfterSeconds: 1, headers: { "Retry-After": "1" } });
    expect(
      rateLimitError({ allowed: false, limit: 10, remaining: 0, resetMs: 6000, retryAfterMs: 2500 }).code,
    ).toBe("rate_limited");
  });
});
