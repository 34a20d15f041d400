import type { Metric, Registry } from "prom-client";

/** One sample of a metric: its labels and value (`metricName` for a histogram's `_bucket`/`_sum`/`_count`). */
export interface Sample {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

export interface CollectedMetricSpec {
  name: string;
  help: string;
  type: "counter" | "histogram";
  /** The samples, read when the registry is scraped. */
  collect(): Sample[];
  /** Zeroes the state (`registry.resetMetrics()`). */
  reset(): void;
  /** Extra properties of the registered object (so a later owner can find shared state). */
  extra?: Record<string, unknown>;
}

/**
 * Registers a metric whose state is kept as plain numbers by its owner and turned into samples
 * only when `/metrics` is scraped. prom-client's own Counter and Histogram hash a label object on
 * every update; on the request path that costs more than the rest of the bookkeeping together.
 * The registry formats these like its own metrics (`registerMetric` only needs `get()`).
 */
export function registerCollected(registry: Registry, spec: CollectedMetricSpec): void {
  const metric = {
    name: spec.name,
    help: spec.help,
    type: spec.type,
    get: async () => ({
      name: spec.name,
      help: spec.help,
      type: spec.type,
      aggregator: "sum" as const,
      values: spec.collect(),
    }),
    reset: () => spec.reset(),
    ...spec.extra,
  };
  registry.registerMetric(metric as unknown as Metric);
}
