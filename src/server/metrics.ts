import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";
import { RateLimitMetrics } from "../limits/metrics.js";

const KNOWN_METHODS = new Set([
  "initialize",
  "ping",
  "tools/list",
  "tools/call",
  "notifications/initialized",
  "session/delete",
  "POST",
  "GET",
  "DELETE",
]);

/**
 * `/metrics`: request counts and a latency histogram per method, plus per-tenant rate-limit
 * counters. Label values come from closed sets (methods outside the set are `other`; tenants past
 * the budget are `_other`), so cardinality stays bounded whatever clients send.
 */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly #requests: Counter<"method" | "status">;
  readonly #latency: Histogram<"method">;
  readonly #limits: RateLimitMetrics;

  constructor(options: { defaultMetrics?: boolean; maxTenantLabels?: number } = {}) {
    if (options.defaultMetrics !== false)
      collectDefaultMetrics({ register: this.registry, prefix: "tenantry_" });
    this.#requests = new Counter({
      name: "tenantry_requests_total",
      help: "MCP HTTP requests by method and status.",
      labelNames: ["method", "status"],
      registers: [this.registry],
    });
    this.#latency = new Histogram({
      name: "tenantry_request_duration_seconds",
      help: "MCP HTTP request latency by method.",
      labelNames: ["method"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [this.registry],
    });
    this.#limits = new RateLimitMetrics({
      registry: this.registry,
      ...(options.maxTenantLabels ? { maxTenantLabels: options.maxTenantLabels } : {}),
    });
  }

  request(method: string, status: number, latencyMs: number): void {
    const m = KNOWN_METHODS.has(method) ? method : "other";
    this.#requests.inc({ method: m, status: String(status) });
    this.#latency.observe({ method: m }, latencyMs / 1000);
  }

  rateLimit(tenantId: string, allowed: boolean): void {
    this.#limits.recordDecision(tenantId, allowed);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
