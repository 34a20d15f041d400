/** Releases one in-flight slot. Calling it again does nothing. */
export type Release = () => void;

const noop: Release = () => {};

/**
 * Caps the requests one tenant may have in flight on this replica, so one noisy tenant cannot
 * occupy every worker. State is a count per tenant with at least one request in flight: entries
 * are deleted at zero, so memory is bounded by the requests in flight, not by the tenants seen.
 *
 * @example
 * const release = inFlight.tryAcquire(tenantId);
 * if (!release) throw new TenantryError("too_many_concurrent");
 * try { await handle(); } finally { release(); }
 */
export class InFlightLimiter {
  readonly #counts = new Map<string, number>();
  readonly #max: number;

  /** @param maxPerTenant most requests in flight per tenant; `0` means no cap. */
  constructor(maxPerTenant: number) {
    if (!Number.isSafeInteger(maxPerTenant) || maxPerTenant < 0) {
      throw new RangeError(`maxPerTenant must be an integer ≥ 0 (got ${maxPerTenant})`);
    }
    this.#max = maxPerTenant;
  }

  /** Requests of `tenantKey` in flight now. */
  inFlight(tenantKey: string): number {
    return this.#counts.get(tenantKey) ?? 0;
  }

  /** Tenants with at least one request in flight. */
  get trackedTenants(): number {
    return this.#counts.size;
  }

  /** Takes a slot, returning its release function, or `undefined` when the tenant is at its cap. */
  tryAcquire(tenantKey: string): Release | undefined {
    if (this.#max === 0) return noop;
    const counts = this.#counts;
    const current = counts.get(tenantKey) ?? 0;
    if (current >= this.#max) return undefined;
    counts.set(tenantKey, current + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (counts.get(tenantKey) ?? 1) - 1;
      if (left > 0) counts.set(tenantKey, left);
      else counts.delete(tenantKey);
    };
  }
}
