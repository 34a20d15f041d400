import type { Logger } from "pino";
import type { AuditSink } from "../audit/audit-event.js";
import { type AuditReader, createAuditReader } from "../audit/audit-query.js";
import type { TenantryConfig } from "../config/resolve.js";
import type { Databases } from "../db/database.js";
import type { DataIsolation } from "../isolation/data-isolation.js";
import type { ObjectStore } from "../isolation/storage/object-store.js";
import type { TenantRegistry } from "../tenancy/registry.js";
import type { ToolDefinition } from "../tools/define-tool.js";
import { ADMIN_TOOLS, adminContextFactory } from "./admin-tools.js";
import { ImpersonationService } from "./impersonation.js";
import { PurgeJob } from "./purge-job.js";
import { TenantService } from "./tenant-service.js";

export interface AdminStageDeps {
  config: TenantryConfig;
  dbs: Databases;
  registry: TenantRegistry;
  isolation: DataIsolation;
  objects: ObjectStore;
  audit: AuditSink;
  replica: string;
  log: Logger;
}

/** The global-admin stage, wired once at start: services, admin tools and the purge job. */
export interface AdminStage {
  readonly tenants: TenantService;
  readonly impersonations: ImpersonationService;
  readonly auditLog: AuditReader;
  readonly purgeJob: PurgeJob;
  /** `admin_list_tenants`, `admin_impersonate`. */
  readonly tools: readonly ToolDefinition[];
  /** The dispatcher's `adminContext` option. */
  readonly adminContext: ReturnType<typeof adminContextFactory>;
}

export function createAdminStage(d: AdminStageDeps): AdminStage {
  const c = d.config;
  const tenants = new TenantService({
    registry: d.registry,
    isolation: d.isolation,
    objects: d.objects,
    audit: d.audit,
    replica: d.replica,
    db: d.dbs.admin,
    archiveDir: c.lifecycle.archive_dir,
    maxObjectBytes: c.storage.max_object_bytes,
    retentionDays: c.lifecycle.retention_days,
    settleMs: c.auth.multi_tenant.registry_cache_ttl_ms,
  });
  const impersonations = new ImpersonationService({
    db: d.dbs.admin,
    store: d.registry.store,
    audit: d.audit,
    replica: d.replica,
    ttlSeconds: c.lifecycle.impersonation_ttl_s,
  });
  return {
    tenants,
    impersonations,
    auditLog: createAuditReader(c.audit.sink, { db: d.dbs.admin, path: c.audit.path }),
    purgeJob: new PurgeJob(tenants, { intervalSeconds: c.lifecycle.purge_interval_s, log: d.log }),
    tools: ADMIN_TOOLS,
    adminContext: adminContextFactory({ tenants, impersonations }),
  };
}
