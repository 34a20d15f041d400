import type { RateLimitDecision } from "./gcra.js";

/** Response header fields describing a rate-limit decision. */
export interface RateLimitHeaders {
  "RateLimit-Policy": string;
  RateLimit: string;
  /** Only on denied decisions. */
  "Retry-After"?: string;
}

/**
 * The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-08 and later, which use
 * Structured Field lists of named policies) for a decision, plus `Retry-After` when denied:
 *
 * ```
 * RateLimit-Policy: "default";q=110;w=60     q = capacity (limit + burst), w = window in seconds
 * RateLimit: "default";r=42;t=17             r = remaining now, t = seconds until full capacity
 * Retry-After: 1                             whole seconds, rounded up, at least 1
 * ```
 *
 * Seconds are rounded up so a client that waits as told never arrives early.
 */
export function rateLimitHeaders(decision: RateLimitDecision, windowSeconds = 60): RateLimitHeaders {
  const headers: RateLimitHeaders = {
    "RateLimit-Policy": policyField(decision, windowSeconds),
    RateLimit: limitField(decision),
  };
  if (!decision.allowed) {
    headers["Retry-After"] = String(Math.max(1, Math.ceil(decision.retryAfterMs / 1000)));
  }
  return headers;
}

/** The allowed-request fields of {@link rateLimitHeaders}, appended to a flat header list (the request path's form). */
export function appendRateLimitHeaders(
  list: string[],
  decision: RateLimitDecision,
  windowSeconds = 60,
): void {
  list.push("RateLimit-Policy", policyField(decision, windowSeconds), "RateLimit", limitField(decision));
}

function policyField(decision: RateLimitDecision, windowSeconds: number): string {
  return `"default";q=${decision.limit};w=${windowSeconds}`;
}

function limitField(decision: RateLimitDecision): string {
  return `"default";r=${decision.remaining};t=${Math.ceil(decision.resetMs / 1000)}`;
}
