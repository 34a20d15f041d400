import type { Registry } from "prom-client";
import { registerCollected, type Sample } from "../server/collected-metric.js";

/** The label value shared by tenants beyond the label budget: not a valid tenant id, so no tenant shares it. */
export const OTHER_TENANT_LABEL = "(other)";

/** Options of {@link RateLimitMetrics}. */
export interface RateLimitMetricsOptions {
  registry: Registry;
  /** Most distinct `tenant` label values; later tenants count as {@link OTHER_TENANT_LABEL}. Default 1000. */
  maxTenantLabels?: number;
}

const ALLOWED = "tenantry_rate_limit_allowed_total";

/** Decisions counted under one `tenant` label. */
interface Tally {
  allowed: number;
  limited: number;
}

/**
 * Per-tenant counters of rate-limit decisions, `tenantry_rate_limit_allowed_total` and
 * `tenantry_rate_limit_limited_total` (label `tenant`). Cardinality is bounded: the first
 * `maxTenantLabels` tenants seen get their own series; the rest share `tenant="(other)"`.
 * The request path adds to a number; series are built when the registry is scraped.
 */
export class RateLimitMetrics {
  /** Label → tally, one per series; shared by every RateLimitMetrics on the same registry. */
  readonly #series: Map<string, Tally>;
  readonly #max: number;

  constructor(options: RateLimitMetricsOptions) {
    this.#max = options.maxTenantLabels ?? 1000;
    const existing = options.registry.getSingleMetric(ALLOWED) as { series?: Map<string, Tally> } | undefined;
    if (existing?.series) {
      this.#series = existing.series;
      return;
    }
    const series = new Map<string, Tally>();
    this.#series = series;
    const samples = (kind: keyof Tally): Sample[] =>
      [...series]
        .filter(([, tally]) => tally[kind] > 0)
        .map(([tenant, tally]) => ({ labels: { tenant }, value: tally[kind] }));
    const reset = () => series.clear();
    registerCollected(options.registry, {
      name: ALLOWED,
      help: "Requests the rate limiter allowed.",
      type: "counter",
      collect: () => samples("allowed"),
      reset,
      extra: { series },
    });
    registerCollected(options.registry, {
      name: "tenantry_rate_limit_limited_total",
      help: "Requests the rate limiter denied.",
      type: "counter",
      collect: () => samples("limited"),
      reset,
    });
  }

  /** Counts `requests` (default one: a batch's calls are decided at once) as allowed or limited. */
  recordDecision(tenantId: string, allowed: boolean, requests = 1): void {
    const tally = this.#tallyFor(tenantId);
    if (allowed) tally.allowed += requests;
    else tally.limited += requests;
  }

  #tallyFor(tenantId: string): Tally {
    const own = this.#series.get(tenantId);
    if (own) return own;
    const label = this.#series.size < this.#max ? tenantId : OTHER_TENANT_LABEL;
    let tally = this.#series.get(label);
    if (!tally) {
      tally = { allowed: 0, limited: 0 };
      this.#series.set(label, tally);
    }
    return tally;
  }
}
