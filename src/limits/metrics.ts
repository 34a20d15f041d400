import { Counter, type Registry } from "prom-client";

/** The label value shared by tenants beyond the label budget. */
export const OTHER_TENANT_LABEL = "_other";

/** Options of {@link RateLimitMetrics}. */
export interface RateLimitMetricsOptions {
  registry: Registry;
  /** Most distinct `tenant` label values; later tenants count as {@link OTHER_TENANT_LABEL}. Default 1000. */
  maxTenantLabels?: number;
}

type Child = ReturnType<Counter<"tenant">["labels"]>;

function counter(registry: Registry, name: string, help: string): Counter<"tenant"> {
  const existing = registry.getSingleMetric(name);
  if (existing instanceof Counter) return existing as Counter<"tenant">;
  return new Counter({ name, help, labelNames: ["tenant"], registers: [registry] });
}

/**
 * Per-tenant counters of rate-limit decisions, `tenantry_rate_limit_allowed_total` and
 * `tenantry_rate_limit_limited_total` (label `tenant`). Cardinality is bounded: the first
 * `maxTenantLabels` tenants seen get their own series; the rest share `tenant="_other"`.
 */
export class RateLimitMetrics {
  readonly #allowed: Counter<"tenant">;
  readonly #limited: Counter<"tenant">;
  readonly #children = new Map<string, [allowed: Child, limited: Child]>();
  readonly #max: number;

  constructor(options: RateLimitMetricsOptions) {
    this.#max = options.maxTenantLabels ?? 1000;
    this.#allowed = counter(
      options.registry,
      "tenantry_rate_limit_allowed_total",
      "Requests the rate limiter allowed.",
    );
    this.#limited = counter(
      options.registry,
      "tenantry_rate_limit_limited_total",
      "Requests the rate limiter denied.",
    );
  }

  /** Counts one decision for `tenantId`. */
  recordDecision(tenantId: string, allowed: boolean): void {
    const [allowedChild, limitedChild] = this.#childrenFor(tenantId);
    (allowed ? allowedChild : limitedChild).inc();
  }

  #childrenFor(tenantId: string): [Child, Child] {
    const cached = this.#children.get(tenantId);
    if (cached) return cached;
    const label = this.#children.size < this.#max ? tenantId : OTHER_TENANT_LABEL;
    const other = this.#children.get(label);
    if (other) return other;
    const created: [Child, Child] = [this.#allowed.labels(label), this.#limited.labels(label)];
    this.#children.set(label, created);
    return created;
  }
}
