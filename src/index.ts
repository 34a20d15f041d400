/**
 * Tenantry: one MCP server deployment, many organizations.
 *
 * @example
 * import { createTenantry, defineTool } from "tenantry";
 * const app = await createTenantry({ configPath: "tenantry.toml" });
 * app.tool(defineTool({ name: "hello", description: "…", input: z.object({}), run: (_i, ctx) => ctx.tenant.tenantId }));
 * await app.listen();
 * @packageDocumentation
 */

export type { AuditEvent } from "./audit/audit-event.js";
export { loadConfig, parseConfig } from "./config/load.js";
export type { TenantryConfig } from "./config/resolve.js";
export { ERROR_CODES, type ErrorCode, isTenantryError, TenantryError } from "./errors.js";
export type { AppMigration } from "./isolation/data-isolation.js";
export { type CreateTenantryOptions, createTenantry, TenantryApp, VERSION } from "./server/app.js";
export { installSignalHandlers } from "./server/signals.js";
export type { TenantContext, TenantScope } from "./tenancy/context.js";
export type { FeatureFlagValue, TenantConfig, TenantRecord, TenantStatus } from "./tenancy/tenant.js";
export { defineTool, type ToolDefinition, type ToolResult } from "./tools/define-tool.js";
export type { TenantDb, TenantObjects, ToolContext } from "./tools/tool-context.js";
