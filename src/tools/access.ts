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
  if (tool.requiredFeature !== undefined && !hasTruthyFlag(featureFlags, tool.requiredFeature)) return false;
  if (tool.requiredScopes) {
    const has = scope.tenant.scopes;
    for (const s of tool.requiredScopes) if (!has.includes(s)) return false;
  }
  return true;
}

/**
 * Whether `flags` sets `name` to a truthy value. Only the tenant's own keys count: a feature named
 * like an `Object.prototype` member (`toString`, `constructor`) must not read as enabled.
 */
function hasTruthyFlag(flags: Readonly<Record<string, unknown>>, name: string): boolean {
  return Object.hasOwn(flags, name) && isTruthyFlag(flags[name]);
}

const FALSY_STRINGS = new Set(["", "false", "0", "off", "no"]);

/** A flag value that enables its feature: `true`, a non-zero number, or a string other than false/0/off/no/"" (any case). */
export function isTruthyFlag(value: unknown): boolean {
  if (typeof value === "string") return !FALSY_STRINGS.has(value.trim().toLowerCase());
  return typeof value === "number" ? value !== 0 && !Number.isNaN(value) : value === true;
}
