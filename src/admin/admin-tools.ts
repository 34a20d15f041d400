import type { Logger } from "pino";
import { z } from "zod";
import type { TenantScope } from "../tenancy/context.js";
import { TENANT_STATUSES, tenantToJson } from "../tenancy/tenant.js";
import { defineTool, type ToolDefinition } from "../tools/define-tool.js";
import type { ToolContext } from "../tools/tool-context.js";
import type { Actor } from "./admin-audit.js";
import type { ImpersonationService } from "./impersonation.js";
import type { TenantService } from "./tenant-service.js";

/** What admin tools find in their context (the dispatcher's `adminContext` builds it). */
export interface AdminToolContext {
  readonly log: Logger;
  readonly requestId: string;
  readonly signal: AbortSignal;
  readonly admin: {
    readonly scope: TenantScope & { kind: "global" };
    readonly actor: Actor;
    readonly tenants: TenantService;
    readonly impersonations: ImpersonationService;
  };
}

/**
 * The dispatcher's `adminContext` option: hands admin tools the admin services and an actor built
 * from the verified global scope. Tenant tools never get it (they are not shown to admins).
 */
export function adminContextFactory(services: {
  tenants: TenantService;
  impersonations: ImpersonationService;
}) {
  return (
    scope: TenantScope & { kind: "global" },
    state: { requestId: string },
  ): Pick<AdminToolContext, "admin"> => ({
    admin: {
      scope,
      actor: {
        id: `admin:${scope.adminId}`,
        requestId: state.requestId,
        admin: { adminId: scope.adminId, issuer: scope.issuer },
      },
      tenants: services.tenants,
      impersonations: services.impersonations,
    },
  });
}

const admin = (ctx: ToolContext) => (ctx as unknown as AdminToolContext).admin;

/** `admin_list_tenants`: every tenant with its status (global admins only). */
export const adminListTenants = defineTool({
  name: "admin_list_tenants",
  description: "List tenants with their status and configuration (global admins only).",
  admin: true,
  annotations: { readOnlyHint: true },
  input: z.object({
    status: z.enum(TENANT_STATUSES).optional(),
    limit: z.number().int().min(1).max(1000).optional(),
    after: z.string().min(1).max(64).optional(),
  }),
  async run(input, ctx) {
    const list = await admin(ctx).tenants.list({
      ...(input.status ? { status: input.status } : {}),
      ...(input.limit ? { limit: input.limit } : {}),
      ...(input.after ? { after: input.after } : {}),
    });
    return { tenants: list.map(tenantToJson) };
  },
});

/** `admin_impersonate`: a time-limited grant to act as a tenant, written to the audit log first. */
export const adminImpersonate = defineTool({
  name: "admin_impersonate",
  description:
    "Get a time-limited grant to act as a tenant (global admins only). Send it, with the same token, " +
    "in the X-Tenantry-Impersonate header. A reason is required and recorded in the audit log.",
  admin: true,
  input: z.object({
    tenant_id: z.string().min(1).max(64),
    reason: z.string().trim().min(1).max(500),
  }),
  async run(input, ctx) {
    const a = admin(ctx);
    const issued = await a.impersonations.grant(
      { adminId: a.scope.adminId, issuer: a.scope.issuer, requestId: ctx.requestId },
      input.tenant_id,
      input.reason,
    );
    return {
      grant: issued.grant,
      tenant_id: issued.tenantId,
      expires_at: issued.expiresAt.toISOString(),
      header: "X-Tenantry-Impersonate",
    };
  },
});

/** The admin tools every server registers. */
export const ADMIN_TOOLS: readonly ToolDefinition[] = [
  adminListTenants,
  adminImpersonate,
] as ToolDefinition[];
