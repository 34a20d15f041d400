import { collectDefaultMetrics, Registry } from "prom-client";
import { RateLimitMetrics } from "../limits/metrics.js";
import { registerCollected, type Sample } from "./collected-metric.js";

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

/** Upper bounds (seconds) of the latency histogram's buckets. */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** One method's counts: requests per status, and the latency histogram (per-bucket, not cumulative). */
interface MethodStats {
  readonly statuses: Map<number, number>;
  readonly buckets: Float64Array;
  sum: number;
  count: number;
}

/**
 * `/metrics`: request counts and a latency histogram per method, plus per-tenant rate-limit
 * counters. Label values come from closed sets (methods outside the set are `other`; tenants past
 * the budget are `(other)`), so cardinality stays bounded whatever clients send. The request path
 * only adds to numbers; samples are built when the endpoint is scraped.
 */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly #methods = new Map<string, MethodStats>();
  readonly #limits: RateLimitMetrics;
  #auditUnrecorded = 0;

  constructor(options: { defaultMetrics?: boolean; maxTenantLabels?: number } = {}) {
    if (options.defaultMetrics !== false)
      collectDefaultMetrics({ register: this.registry, prefix: "tenantry_" });
    registerCollected(this.registry, {
      name: "tenantry_requests_total",
      help: "MCP HTTP requests by method and status.",
      type: "counter",
      collect: () => {
        const samples: Sample[] = [];
        for (const [method, stats] of this.#methods)
          for (const [status, value] of stats.statuses)
            samples.push({ labels: { method, status: String(status) }, value });
        return samples;
      },
      reset: () => this.#methods.clear(),
    });
    registerCollected(this.registry, {
      name: "tenantry_request_duration_seconds",
      help: "MCP HTTP request latency by method.",
      type: "histogram",
      collect: () => this.#latencySamples(),
      reset: () => this.#methods.clear(),
    });
    registerCollected(this.registry, {
      name: "tenantry_audit_unrecorded_total",
      help: "Requests refused before any work whose audit event was not queued (the queue's share for them was full); each is counted in an audit.unrecorded summary event.",
      type: "counter",
      collect: () => [{ labels: {}, value: this.#auditUnrecorded }],
      reset: () => {
        this.#auditUnrecorded = 0;
      },
    });
    this.#limits = new RateLimitMetrics({
      registry: this.registry,
      ...(options.maxTenantLabels ? { maxTenantLabels: options.maxTenantLabels } : {}),
    });
  }

  request(method: string, status: number, latencyMs: number): void {
    const m = KNOWN_METHODS.has(method) ? method : "other";
    let stats = this.#methods.get(m);
    if (stats === undefined) {
      stats = { statuses: new Map(), buckets: new Float64Array(LATENCY_BUCKETS.length), sum: 0, count: 0 };
      this.#methods.set(m, stats);
    }
    stats.statuses.set(status, (stats.statuses.get(status) ?? 0) + 1);
    const seconds = latencyMs / 1000;
    const bucket = LATENCY_BUCKETS.findIndex((bound) => seconds <= bound);
    if (bucket !== -1) stats.buckets[bucket]! += 1;
    stats.sum += seconds;
    stats.count += 1;
  }

  /** A refusal before any work that the audit log only counts (see `enqueueRefused`). */
  auditUnrecorded(): void {
    this.#auditUnrecorded++;
  }

  rateLimit(tenantId: string, allowed: boolean, requests = 1): void {
    this.#limits.recordDecision(tenantId, allowed, requests);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  #latencySamples(): Sample[] {
    const name = "tenantry_request_duration_seconds";
    const samples: Sample[] = [];
    for (const [method, stats] of this.#methods) {
      let cumulative = 0;
      LATENCY_BUCKETS.forEach((bound, i) => {
        cumulative += stats.buckets[i]!;
        samples.push({ labels: { le: bound, method }, value: cumulative, metricName: `${name}_bucket` });
      });
      samples.push({ labels: { le: "+Inf", method }, value: stats.count, metricName: `${name}_bucket` });
      samples.push({ labels: { method }, value: stats.sum, metricName: `${name}_sum` });
      samples.push({ labels: { method }, value: stats.count, metricName: `${name}_count` });
    }
    return samples;
  }
}
