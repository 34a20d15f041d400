import type { TenantScope } from "../tenancy/context.js";
import type { TenantRecord } from "../tenancy/tenant.js";
import type { ToolDefinition } from "./define-tool.js";

/**
 * The one authorization rule for tools, used by both `tools/list` and `tools/call`, so that what
 * a caller sees is exactly what it may call. Global admins see admin tools only; tenants never do.
 */
export function mayUseTool(
  tool: ToolDefinition,
  scope: TenantScope,
  record: TenantRecord | undefined,
): boolean {
  if (scope.kind === "global") return tool.admin === true;
  if (tool.admin || !record) return false;
  const { allowedTools, featureFlags } = record.config;
  if (allowedTools.length > 0 && !allowedTools.includes(tool.name)) return false;
  if (tool.requiredFeature !== undefined && !isTruthyFlag(featureFlags[tool.requiredFeature])) return false;
  if (tool.requiredScopes) {
    const has = scope.tenant.scopes;
    for (const s of tool.requiredScopes) if (!has.includes(s)) return false;
  }
  return true;
}

export function isTruthyFlag(value: unknown): boolean {
  if (typeof value === "string") return value !== "" && value !== "false" && value !== "0" && value !== "off";
  return Boolean(value);
}
