import { NOTIFY_CHANNEL } from "../db/core-migrations.js";
import type { Database } from "../db/database.js";
import { RegistryStore } from "./registry-store.js";
import type { TenantRecord } from "./tenant.js";

export interface RegistryOptions {
  /** How long an entry is trusted before it is read again (a backstop: writes also invalidate). */
  ttlMs: number;
  /** Most tenants' entries kept; the oldest are dropped first. */
  maxEntries?: number;
  /**
   * Most "no such tenant" answers kept, apart from tenants' entries; the oldest are dropped first.
   * Tokens naming tenants that do not exist are cheap to mint, so these never take a tenant's slot.
   */
  maxNegativeEntries?: number;
  now?: () => number;
}

interface Entry {
  record: TenantRecord;
  /** After this (epoch ms) the entry is not used: the next request reads the store and waits. */
  until: number;
}

/** Share of the TTL after which an entry in use is renewed in the background. */
const REFRESH_AHEAD = 0.75;

/**
 * The registry as the request path sees it: the store behind a small bounded cache with a short
 * TTL. Writes anywhere NOTIFY on `tenantry_tenants`; every replica LISTENs and drops the entry,
 * so a suspension is honoured on the next request (the TTL bounds the delay if a notification is lost).
 *
 * An entry in use is renewed ahead of its expiry: in the last quarter of its TTL a request still
 * gets it at once while one background read replaces it, so a busy tenant never waits on the
 * store. No entry is ever used past its TTL; if the background read fails the entry simply
 * expires, and the next request reads the store itself (and is refused if that fails).
 *
 * "No such tenant" is cached too, but apart: in its own smaller map, holding only its expiry, and
 * without renewal ahead. Anyone able to get a validly signed token for a tenant id of their
 * choosing (an Entra `{tid}` issuer, an IdP with self-service organizations) can send a stream of
 * distinct unknown ids; they only ever displace each other, never a tenant's entry, so real
 * tenants keep being answered from memory however long the stream.
 */
export class TenantRegistry {
  readonly store: RegistryStore;
  readonly #db: Database;
  readonly #ttl: number;
  readonly #max: number;
  readonly #maxNegative: number;
  readonly #now: () => number;
  readonly #cache = new Map<string, Entry>();
  /** Unknown tenant id → until when "no such tenant" is trusted (epoch ms). */
  readonly #missing = new Map<string, number>();
  readonly #loading = new Map<string, Promise<TenantRecord | undefined>>();
  #generation = 0;
  #unlisten: (() => Promise<void>) | undefined;

  constructor(db: Database, options: RegistryOptions) {
    this.#db = db;
    this.store = new RegistryStore(db);
    this.#ttl = options.ttlMs;
    this.#max = options.maxEntries ?? 10_000;
    this.#maxNegative = options.maxNegativeEntries ?? 1_000;
    this.#now = options.now ?? Date.now;
  }

  /** Starts listening for changes made by other processes. */
  async start(): Promise<void> {
    // A payload names one tenant, whoever sent it: tool SQL can NOTIFY this channel too, and must
    // not be able to empty every replica's cache. Only a (re)connected listener drops everything.
    this.#unlisten = await this.#db.listen(NOTIFY_CHANNEL, (id) => this.invalidate(id));
  }

  async stop(): Promise<void> {
    await this.#unlisten?.();
    this.#unlisten = undefined;
  }

  /** Drops one tenant's entry, or all of them. */
  invalidate(tenantId?: string): void {
    this.#generation++;
    if (tenantId === undefined) {
      this.#cache.clear();
      this.#missing.clear();
      this.#loading.clear();
    } else {
      this.#cache.delete(tenantId);
      this.#missing.delete(tenantId);
      this.#loading.delete(tenantId);
    }
  }

  /** The tenant's record, from cache when fresh. A database error propagates (the caller denies). */
  get(tenantId: string): Promise<TenantRecord | undefined> | TenantRecord | undefined {
    const hit = this.#cache.get(tenantId);
    if (hit !== undefined) {
      const now = this.#now();
      if (hit.until > now) {
        // In the last quarter of the TTL: still used, and renewed by one read in the background.
        if (now >= hit.until - this.#ttl * (1 - REFRESH_AHEAD) && !this.#loading.has(tenantId)) {
          this.#load(tenantId).catch(() => {}); // on failure the entry expires; a request then reads itself
        }
        return hit.record;
      }
    } else {
      const missingUntil = this.#missing.get(tenantId);
      if (missingUntil !== undefined && missingUntil > this.#now()) return undefined;
    }
    const pending = this.#loading.get(tenantId);
    if (pending) return pending;
    return this.#load(tenantId);
  }

  /** Reads one tenant from the store, shared by concurrent callers, caching the result. */
  #load(tenantId: string): Promise<TenantRecord | undefined> {
    const generation = this.#generation;
    const load: Promise<TenantRecord | undefined> = this.store.get(tenantId).then(
      (record) => {
        // An invalidation may have replaced this load with a newer one: leave that one in place.
        if (this.#loading.get(tenantId) === load) this.#loading.delete(tenantId);
        // An invalidation that raced this read wins: don't cache a possibly stale record.
        if (generation === this.#generation) this.#put(tenantId, record);
        return record;
      },
      (error: unknown) => {
        if (this.#loading.get(tenantId) === load) this.#loading.delete(tenantId);
        throw error;
      },
    );
    this.#loading.set(tenantId, load);
    return load;
  }

  /** Entries currently cached, tenants' and "no such tenant" ones (for memory measurements). */
  get size(): number {
    return this.#cache.size + this.#missing.size;
  }

  #put(tenantId: string, record: TenantRecord | undefined): void {
    const until = this.#now() + this.#ttl;
    this.#cache.delete(tenantId);
    this.#missing.delete(tenantId);
    if (record === undefined) {
      if (this.#missing.size >= this.#maxNegative) dropOldest(this.#missing);
      if (this.#maxNegative > 0) this.#missing.set(tenantId, until);
      return;
    }
    if (this.#cache.size >= this.#max) dropOldest(this.#cache);
    this.#cache.set(tenantId, { record, until });
  }
}

function dropOldest(map: Map<string, unknown>): void {
  const oldest = map.keys().next();
  if (!oldest.done) map.delete(oldest.value);
}
