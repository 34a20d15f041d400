import type { TenantRecord } from "../../src/tenancy/tenant.js";

/** An active registry record, for tests that drive isolation without the registry. */
export function record(id: string, key: string): TenantRecord {
  const now = new Date();
  return {
    id,
    key,
    name: id,
    status: "active",
    expiresAt: null,
    config: { rateLimit: null, allowedTools: [], featureFlags: {} },
    provisioningStep: null,
    archivePath: null,
    purgeAfter: null,
    createdAt: now,
    updatedAt: now,
  };
}
