import { createHash, randomBytes } from "node:crypto";
import type { AuditSink } from "../audit/audit-event.js";
import type { Database } from "../db/database.js";
import { TenantryError } from "../errors.js";
import type { RegistryStore } from "../tenancy/registry-store.js";
import { assertTenantId } from "../tenancy/tenant-id.js";
import { writeAdminEvent } from "./admin-audit.js";

/** The header a global admin sends, with a grant, to act as a tenant on `/mcp`. */
export const IMPERSONATION_HEADER = "x-tenantry-impersonate";

/** The global admin asking for, or presenting, a grant. */
export interface ImpersonatingAdmin {
  /** The admin's user id as the token says (`sub`, or the configured user claim). */
  readonly adminId: string;
  /** The token's issuer: a grant is bound to issuer and user id. */
  readonly issuer: string;
  readonly requestId?: string;
}

/** A grant as issued: `grant` is the opaque secret the admin sends in {@link IMPERSONATION_HEADER}. */
export interface IssuedGrant {
  readonly grant: string;
  readonly tenantId: string;
  readonly reason: string;
  readonly expiresAt: Date;
}

/** What a valid grant lets its admin do: act as `tenantId` until `expiresAt` (epoch ms). */
export interface ActiveGrant {
  readonly tenantId: string;
  readonly adminId: string;
  readonly reason: string;
  readonly expiresAt: number;
}

/** What the request pipeline needs: grant → tenant, or `forbidden`. */
export interface ImpersonationResolver {
  resolve(grant: string, admin: ImpersonatingAdmin): Promise<ActiveGrant>;
}

export interface ImpersonationDeps {
  db: Database;
  store: RegistryStore;
  audit: AuditSink;
  replica: string;
  /** `[lifecycle] impersonation_ttl_s`: the longest a grant lives. */
  ttlSeconds: number;
  now?: () => number;
  /** Most grants kept in memory per replica (a cache: the table is the system of record). */
  cacheSize?: number;
}

const GRANT_PATTERN = /^tig_[A-Za-z0-9_-]{43}$/;
const MAX_REASON = 500;
const REFUSED = "unknown, expired or foreign impersonation grant";

interface GrantRow {
  [key: string]: unknown;
  admin_id: string;
  admin_issuer: string;
  tenant_id: string;
  reason: string;
  expires_at: Date | string;
}

interface CachedGrant extends ActiveGrant {
  readonly issuer: string;
}

const hashGrant = (grant: string) => createHash("sha256").update(grant, "utf8").digest("hex");

/**
 * Time-limited impersonation. A global admin asks for a grant with a reason; the grant is written
 * to the audit log before it exists (no audit, no grant), stored as a hash in
 * `tenantry_impersonations` so every replica honours it, and is valid only for the admin who asked,
 * until it expires. Grants cannot be extended: ask for a new one.
 */
export class ImpersonationService implements ImpersonationResolver {
  readonly #d: ImpersonationDeps;
  readonly #now: () => number;
  readonly #cache = new Map<string, CachedGrant>();
  readonly #max: number;

  constructor(deps: ImpersonationDeps) {
    this.#d = deps;
    this.#now = deps.now ?? Date.now;
    this.#max = deps.cacheSize ?? 1000;
  }

  /**
   * Issues a grant for `admin` to act as `tenantId`. `reason` is required (1-500 characters) and
   * recorded; `ttlSeconds` may shorten, never extend, the configured lifetime.
   *
   * @example
   * const { grant } = await impersonations.grant({ adminId: "auth0|ops", issuer }, "acme", "ticket 4711");
   * // then: POST /mcp with the same admin token and `X-Tenantry-Impersonate: <grant>`
   */
  async grant(
    admin: ImpersonatingAdmin,
    tenantId: string,
    reason: unknown,
    options: { ttlSeconds?: number } = {},
  ): Promise<IssuedGrant> {
    assertTenantId(tenantId);
    if (typeof reason !== "string" || reason.trim() === "" || reason.includes("\0")) {
      throw new TenantryError("invalid_argument", "impersonation needs a reason (text without NUL)");
    }
    if (reason.length > MAX_REASON) {
      throw new TenantryError("invalid_argument", `the reason must be at most ${MAX_REASON} characters`);
    }
    if (!admin.adminId || !admin.issuer) {
      throw new TenantryError(
        "forbidden",
        "impersonation needs a global admin token: the grant is bound to it",
      );
    }
    let ttl = this.#d.ttlSeconds;
    if (options.ttlSeconds !== undefined) {
      if (!Number.isSafeInteger(options.ttlSeconds) || options.ttlSeconds <= 0) {
        throw new TenantryError("invalid_argument", "ttl_s must be a positive integer");
      }
      ttl = Math.min(ttl, options.ttlSeconds);
    }
    const record = await this.#d.store.get(tenantId);
    if (!record) throw new TenantryError("unknown_tenant", `tenant ${tenantId} is not registered`);
    if (record.status === "deprovisioned" || record.status === "provisioning") {
      throw new TenantryError("tenant_conflict", `tenant ${tenantId} is ${record.status}`);
    }
    const grant = `tig_${randomBytes(32).toString("base64url")}`;
    const hash = hashGrant(grant);
    const expiresAt = new Date(this.#now() + ttl * 1000);
    const trimmed = reason.trim();
    await writeAdminEvent(this.#d.audit, this.#d.replica, {
      actor: { id: `admin:${admin.adminId}`, ...(admin.requestId ? { requestId: admin.requestId } : {}) },
      action: "impersonation.grant",
      tenantId,
      details: {
        reason: trimmed,
        expires_at: expiresAt.toISOString(),
        grant_ref: hash.slice(0, 16),
        issuer: admin.issuer,
      },
    });
    await this.#d.db.query("DELETE FROM tenantry_impersonations WHERE expires_at < now() - interval '1 day'");
    await this.#d.db.query(
      `INSERT INTO tenantry_impersonations (grant_hash, admin_id, admin_issuer, tenant_id, reason, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6)`,
      [hash, admin.adminId, admin.issuer, tenantId, trimmed, expiresAt.toISOString()],
    );
    return { grant, tenantId, reason: trimmed, expiresAt };
  }

  /**
   * The grant's tenant, if `grant` exists, has not expired, and was issued to `admin`; otherwise
   * `forbidden`, with one message for every case. A database error is `service_unavailable`.
   */
  async resolve(grant: string, admin: ImpersonatingAdmin): Promise<ActiveGrant> {
    if (typeof grant !== "string" || !GRANT_PATTERN.test(grant))
      throw new TenantryError("forbidden", REFUSED);
    const hash = hashGrant(grant);
    let found = this.#cache.get(hash);
    if (!found) {
      let rows: GrantRow[];
      try {
        rows = (
          await this.#d.db.query<GrantRow>(
            `SELECT admin_id, admin_issuer, tenant_id, reason, expires_at
               FROM tenantry_impersonations WHERE grant_hash = $1`,
            [hash],
          )
        ).rows;
      } catch (error) {
        throw new TenantryError("service_unavailable", "impersonation grants are unavailable", {
          cause: error,
        });
      }
      const row = rows[0];
      if (!row) throw new TenantryError("forbidden", REFUSED);
      found = {
        tenantId: row.tenant_id,
        adminId: row.admin_id,
        issuer: row.admin_issuer,
        reason: row.reason,
        expiresAt: new Date(row.expires_at).getTime(),
      };
      this.#remember(hash, found);
    }
    if (found.expiresAt <= this.#now()) {
      this.#cache.delete(hash);
      throw new TenantryError("forbidden", REFUSED);
    }
    if (found.adminId !== admin.adminId || found.issuer !== admin.issuer) {
      throw new TenantryError("forbidden", REFUSED);
    }
    return {
      tenantId: found.tenantId,
      adminId: found.adminId,
      reason: found.reason,
      expiresAt: found.expiresAt,
    };
  }

  #remember(hash: string, grant: CachedGrant): void {
    if (this.#cache.size >= this.#max) {
      const now = this.#now();
      for (const [k, v] of this.#cache) if (v.expiresAt <= now) this.#cache.delete(k);
      if (this.#cache.size >= this.#max) {
        const oldest = this.#cache.keys().next();
        if (!oldest.done) this.#cache.delete(oldest.value);
      }
    }
    this.#cache.set(hash, grant);
  }
}
