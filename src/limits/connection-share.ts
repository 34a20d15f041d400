import { TenantryError } from "../errors.js";
import type { Release } from "./concurrency.js";

interface Tenant {
  held: number;
  /** Calls waiting for a slot, oldest first. */
  readonly waiting: Array<(release: Release) => void>;
}

/**
 * Each tenant's share of the runtime connection pool: at most `max` connections held by one tenant
 * at once. A tenant whose tool calls are slow (or hang with a transaction open) can then occupy
 * only its share, and the other tenants' calls still find connections. Unlike the in-flight cap
 * (`InFlightLimiter`), which refuses at once, a call over its tenant's share waits its turn, first
 * come first served, for up to `waitMs`; then it fails with `service_unavailable`, as a call that
 * finds the whole pool busy does.
 *
 * State exists only for tenants holding or waiting for a slot, so it stays bounded by the calls in
 * flight.
 *
 * @example
 * const share = new ConnectionShare(5, 5000);
 * const slot = share.acquire(record.key);
 * const release = slot instanceof Promise ? await slot : slot;
 * try { … } finally { release(); }
 */
export class ConnectionShare {
  readonly max: number;
  readonly #waitMs: number;
  readonly #tenants = new Map<string, Tenant>();

  constructor(max: number, waitMs: number) {
    if (!(Number.isSafeInteger(max) && max >= 1)) {
      throw new TenantryError("invalid_argument", "max_connections_per_tenant must be an integer ≥ 1");
    }
    this.max = max;
    this.#waitMs = waitMs;
  }

  /** Tenants holding or waiting for a slot. */
  get tracked(): number {
    return this.#tenants.size;
  }

  /** Slots held now by `tenantKey` (for tests and metrics). */
  held(tenantKey: string): number {
    return this.#tenants.get(tenantKey)?.held ?? 0;
  }

  /** A slot for `tenantKey`: at once when its share has room, else a promise (rejects after `waitMs`). */
  acquire(tenantKey: string): Release | Promise<Release> {
    let tenant = this.#tenants.get(tenantKey);
    if (tenant === undefined) {
      tenant = { held: 0, waiting: [] };
      this.#tenants.set(tenantKey, tenant);
    }
    if (tenant.held < this.max) {
      tenant.held++;
      return this.#releaser(tenantKey, tenant);
    }
    const queued = tenant;
    return new Promise<Release>((resolve, reject) => {
      const grant = (release: Release) => {
        clearTimeout(timer);
        resolve(release);
      };
      const timer = setTimeout(() => {
        const at = queued.waiting.indexOf(grant);
        if (at >= 0) queued.waiting.splice(at, 1);
        this.#forget(tenantKey, queued);
        reject(
          new TenantryError(
            "service_unavailable",
            `this tenant's share of database connections (${this.max}) stayed busy for ${this.#waitMs} ms`,
          ),
        );
      }, this.#waitMs);
      queued.waiting.push(grant);
    });
  }

  #releaser(tenantKey: string, tenant: Tenant): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = tenant.waiting.shift();
      // The slot passes straight to the oldest waiter: no newcomer can overtake it.
      if (next !== undefined) next(this.#releaser(tenantKey, tenant));
      else {
        tenant.held--;
        this.#forget(tenantKey, tenant);
      }
    };
  }

  #forget(tenantKey: string, tenant: Tenant): void {
    if (tenant.held === 0 && tenant.waiting.length === 0 && this.#tenants.get(tenantKey) === tenant) {
      this.#tenants.delete(tenantKey);
    }
  }
}
