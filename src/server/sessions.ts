import { randomUUID } from "node:crypto";
import type { TenantScope } from "../tenancy/context.js";

/** The identity a stateful session is bound to: issuer + user + tenant (or global). */
export function sessionOwner(scope: TenantScope): string {
  return scope.kind === "tenant"
    ? `${scope.tenant.issuer}\n${scope.tenant.userId}\n${scope.tenant.tenantId}`
    : `${scope.issuer}\n${scope.adminId}\n*global*`;
}

interface Session {
  owner: string;
  /** The tenant whose share the session counts against (`*global*` for admins). */
  tenant: string;
  lastSeen: number;
}

/**
 * Stateful MCP sessions, bounded in number and idle time. A session id presented by anyone other
 * than its owner is treated exactly like an id that does not exist (404), so ids cannot be probed.
 *
 * Each tenant may hold at most `maxPerTenant` sessions: past it, a new session of that tenant
 * evicts the tenant's own least recently used one. Only when the whole store is full does a new
 * session evict the least recently used of all. So one tenant opening sessions in a loop churns
 * its own and cannot push every other tenant's clients out (they would have to re-initialize).
 */
export class SessionStore {
  /** Every session, least recently used first. */
  readonly #sessions = new Map<string, Session>();
  /** Each tenant's session ids, least recently used first. */
  readonly #byTenant = new Map<string, Set<string>>();
  readonly #max: number;
  readonly #maxPerTenant: number;
  readonly #idleMs: number;
  readonly #now: () => number;

  constructor(max: number, idleMs: number, now: () => number = Date.now, maxPerTenant = max) {
    this.#max = max;
    this.#maxPerTenant = Math.min(maxPerTenant, max);
    this.#idleMs = idleMs;
    this.#now = now;
  }

  create(scope: TenantScope): string {
    const id = randomUUID();
    const tenant = scope.kind === "tenant" ? scope.tenant.tenantId : "*global*";
    const own = this.#byTenant.get(tenant);
    if (own !== undefined && own.size >= this.#maxPerTenant) {
      this.#remove(own.values().next().value as string);
    } else if (this.#sessions.size >= this.#max) {
      const oldest = this.#sessions.keys().next();
      if (!oldest.done) this.#remove(oldest.value);
    }
    this.#sessions.set(id, { owner: sessionOwner(scope), tenant, lastSeen: this.#now() });
    let ids = this.#byTenant.get(tenant);
    if (ids === undefined) {
      ids = new Set();
      this.#byTenant.set(tenant, ids);
    }
    ids.add(id);
    return id;
  }

  /** True when the session exists, is not idle-expired and belongs to this caller; refreshes it. */
  touch(id: string, scope: TenantScope): boolean {
    const s = this.#sessions.get(id);
    if (!s) return false;
    const now = this.#now();
    if (now - s.lastSeen > this.#idleMs) {
      this.#remove(id);
      return false;
    }
    if (s.owner !== sessionOwner(scope)) return false;
    s.lastSeen = now;
    // Re-insert to keep both orders by recency, so eviction drops the least recently used.
    this.#sessions.delete(id);
    this.#sessions.set(id, s);
    const own = this.#byTenant.get(s.tenant)!;
    own.delete(id);
    own.add(id);
    return true;
  }

  delete(id: string, scope: TenantScope): boolean {
    if (!this.touch(id, scope)) return false;
    this.#remove(id);
    return true;
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** How many sessions a tenant holds (`*global*`: global admins). */
  sizeOf(tenant: string): number {
    return this.#byTenant.get(tenant)?.size ?? 0;
  }

  #remove(id: string): void {
    const s = this.#sessions.get(id);
    if (s === undefined) return;
    this.#sessions.delete(id);
    const own = this.#byTenant.get(s.tenant);
    own?.delete(id);
    if (own?.size === 0) this.#byTenant.delete(s.tenant);
  }
}
