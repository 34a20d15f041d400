import { TenantryError } from "../errors.js";

/**
 * Tenant ids are what the IdP says: case-sensitive, never lower-cased or filtered. `.` and `..`
 * are refused: every URL parser (fetch, curl, proxies) turns them into a path step, so a tenant
 * with such an id could never be addressed as `/admin/api/tenants/<id>` (to suspend it, say).
 */
export const TENANT_ID_PATTERN = /^(?!\.\.?$)[A-Za-z0-9._:-]{1,64}$/;

export function isValidTenantId(id: unknown): id is string {
  return typeof id === "string" && TENANT_ID_PATTERN.test(id);
}

export function assertTenantId(id: unknown): string {
  if (!isValidTenantId(id)) {
    const shown = typeof id === "string" ? JSON.stringify(id.slice(0, 80)) : typeof id;
    throw new TenantryError(
      "invalid_tenant_id",
      `invalid tenant id ${shown}: expected 1-64 characters of [A-Za-z0-9._:-], other than . and ..`,
    );
  }
  return id;
}
