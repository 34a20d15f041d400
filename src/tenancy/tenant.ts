/** Lifecycle states. `provisioning` and `deprovisioned` tenants are never served. */
export const TENANT_STATUSES = ["provisioning", "active", "suspended", "trial", "deprovisioned"] as const;
export type TenantStatus = (typeof TENANT_STATUSES)[number];

export type FeatureFlagValue = boolean | string | number;

/** Per-tenant configuration enforced by the pipeline. */
export interface TenantConfig {
  /** Requests per minute; `null` means `[auth.multi_tenant] default_rate_limit`. */
  readonly rateLimit: number | null;
  /** Tool names this tenant may use; empty means every tool. */
  readonly allowedTools: readonly string[];
  readonly featureFlags: Readonly<Record<string, FeatureFlagValue>>;
}

/** A registry record. `key` is immutable and assigned at provisioning: schema and prefix derive from it. */
export interface TenantRecord {
  readonly id: string;
  readonly key: string;
  readonly name: string;
  readonly status: TenantStatus;
  /** Trial end (trial status only). */
  readonly expiresAt: Date | null;
  readonly config: TenantConfig;
  readonly provisioningStep: string | null;
  readonly archivePath: string | null;
  readonly purgeAfter: Date | null;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  /**
   * Bumped by every registry write: lifecycle steps that read, work, then write compare it so
   * that a change made meanwhile by another replica or the CLI is never overwritten.
   */
  readonly version: number;
  /** Written by each renewal of a lease on the tenant (see `RegistryLease`); null if none. */
  readonly leaseNonce?: string | null;
}

/** What `tenants create` / the admin API accept. */
export interface NewTenant {
  id: string;
  name: string;
  rateLimit?: number | null;
  allowedTools?: string[];
  featureFlags?: Record<string, FeatureFlagValue>;
  trialDays?: number;
}

/** A partial update; `trialDays: 0`-like conversions go through `status`. */
export interface TenantUpdate {
  name?: string;
  rateLimit?: number | null;
  allowedTools?: string[];
  featureFlags?: Record<string, FeatureFlagValue>;
  /** Replace (true) or merge (false, default) feature flags. */
  replaceFlags?: boolean;
  status?: TenantStatus;
  expiresAt?: Date | null;
  provisioningStep?: string | null;
  archivePath?: string | null;
  leaseNonce?: string | null;
  purgeAfter?: Date | null;
}

/** JSON form used by `--json` and the admin API. */
export function tenantToJson(t: TenantRecord): Record<string, unknown> {
  return {
    id: t.id,
    name: t.name,
    status: t.status,
    expires_at: t.expiresAt?.toISOString() ?? null,
    rate_limit: t.config.rateLimit,
    allowed_tools: t.config.allowedTools,
    feature_flags: t.config.featureFlags,
    key: t.key,
    // What a lifecycle operation is doing with the tenant, or left it at: `database` (a create
    // under schema_per_tenant), `restoring`, `restore_failed`, `purging`; null otherwise.
    provisioning_step: t.provisioningStep,
    archive_path: t.archivePath,
    purge_after: t.purgeAfter?.toISOString() ?? null,
    created_at: t.createdAt.toISOString(),
    updated_at: t.updatedAt.toISOString(),
  };
}
