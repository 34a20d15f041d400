import { TenantryError } from "../errors.js";
import type { TenantRecord } from "./tenant.js";

/**
 * The status rule, in one place: only `active` tenants and `trial` tenants before `expiresAt`
 * are served. Everything else is refused with its own code; an unknown state denies.
 */
export function admit(
  tenantId: string,
  record: TenantRecord | undefined,
  now: number = Date.now(),
): TenantRecord {
  if (!record) throw new TenantryError("unknown_tenant", `tenant ${tenantId} is not registered`);
  switch (record.status) {
    case "active":
      return record;
    case "trial":
      if (record.expiresAt !== null && record.expiresAt.getTime() > now) return record;
      throw new TenantryError("trial_expired", `the trial of tenant ${tenantId} has expired`);
    case "suspended":
      throw new TenantryError("tenant_suspended", `tenant ${tenantId} is suspended`);
    case "deprovisioned":
      throw new TenantryError("tenant_deprovisioned", `tenant ${tenantId} has been deprovisioned`);
    case "provisioning":
      throw new TenantryError("unknown_tenant", `tenant ${tenantId} is not ready`);
    default:
      throw new TenantryError("unknown_tenant", `tenant ${tenantId} has no usable status`);
  }
}
