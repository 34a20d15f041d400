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
  lastSeen: number;
}

/**
 * Stateful MCP sessions, bounded in number and idle time. A session id presented by anyone other
 * than its owner is treated exactly like an id that does not exist (404), so ids cannot be probed.
 */
export class SessionStore {
  readonly #sessions = new Map<string, Session>();
  readonly #max: number;
  readonly #idleMs: number;
  readonly #now: () => number;

  constructor(max: number, idleMs: number, now: () => number = Date.now) {
    this.#max = max;
    this.#idleMs = idleMs;
    this.#now = now;
  }

  create(scope: TenantScope): string {
    const id = randomUUID();
    if (this.#sessions.size >= this.#max) {
      const oldest = this.#sessions.keys().next();
      if (!oldest.done) this.#sessions.delete(oldest.value);
    }
    this.#sessions.set(id, { owner: sessionOwner(scope), lastSeen: this.#now() });
    return id;
  }

  /** True when the session exists, is not idle-expired and belongs to this caller; refreshes it. */
  touch(id: string, scope: TenantScope): boolean {
    const s = this.#sessions.get(id);
    if (!s) return false;
    const now = this.#now();
    if (now - s.lastSeen > this.#idleMs) {
      this.#sessions.delete(id);
      return false;
    }
    if (s.owner !== sessionOwner(scope)) return false;
    s.lastSeen = now;
    // Re-insert to keep Map order by recency, so eviction drops the least recently used.
    this.#sessions.delete(id);
    this.#sessions.set(id, s);
    return true;
  }

  delete(id: string, scope: TenantScope): boolean {
    if (!this.touch(id, scope)) return false;
    return this.#sessions.delete(id);
  }

  get size(): number {
    return this.#sessions.size;
  }
}
