import type { AuditEvent } from "../../src/audit/audit-event.js";
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
    version: 0,
  };
}

/** A request event numbered `n` (request id `r<n>`, tenant `t<n % 3>`), for tests of the audit sinks. */
export function auditEvent(n: number): AuditEvent {
  return {
    at: new Date(0).toISOString(),
    kind: "request",
    tenantId: `t${n % 3}`,
    userId: "u",
    impersonatedBy: null,
    action: "tools/call",
    tool: null,
    outcome: "ok",
    errorCode: null,
    latencyMs: 1,
    requestId: `r${n}`,
    replica: "test",
    details: null,
  };
}
