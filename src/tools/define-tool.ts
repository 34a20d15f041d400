import type { z } from "zod";
import type { ToolContext } from "./tool-context.js";

/** What a tool returns: any JSON-serialisable value, or a full MCP result. */
export type ToolResult = unknown;

export interface ToolDefinition<Schema extends z.ZodType = z.ZodType> {
  readonly name: string;
  readonly description: string;
  readonly input: Schema;
  /** Scopes the caller's token must carry, all of them. */
  readonly requiredScopes?: readonly string[];
  /** A feature flag the tenant must have set to a truthy value. */
  readonly requiredFeature?: string;
  /** Tools for global admins only (never shown to tenants). */
  readonly admin?: boolean;
  /** MCP tool annotations (`readOnlyHint`, …). */
  readonly annotations?: Record<string, unknown>;
  /**
   * How `ctx.db` groups this tool's statements. `"call"` (the default): one transaction for the
   * whole call, committed when `run` succeeds and rolled back when it throws. `"statement"`: each
   * `ctx.db.query` is its own transaction, bound to the tenant and sent with its binding in one
   * round trip — the fast choice for a tool that reads, or writes with a single statement.
   * Isolation is the same either way; only atomicity across statements differs.
   */
  readonly transaction?: "call" | "statement";
  run(input: z.infer<Schema>, ctx: ToolContext): Promise<ToolResult> | ToolResult;
}

const TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/;

/**
 * Declares a tool. `ctx.tenant` is always set when `run` is called, and `ctx.db` / `ctx.storage`
 * are bound to that tenant: there is no parameter through which tool code could name another.
 *
 * @example
 * const whoami = defineTool({
 *   name: "whoami",
 *   description: "Who am I, as this server sees me",
 *   input: z.object({}),
 *   run: (_input, ctx) => ({ tenant: ctx.tenant.tenantId, user: ctx.tenant.userId }),
 * });
 */
export function defineTool<Schema extends z.ZodType>(
  definition: ToolDefinition<Schema>,
): ToolDefinition<Schema> {
  if (!TOOL_NAME.test(definition.name)) {
    throw new TypeError(`tool name ${JSON.stringify(definition.name)} must match ${TOOL_NAME}`);
  }
  if (
    definition.transaction !== undefined &&
    definition.transaction !== "call" &&
    definition.transaction !== "statement"
  ) {
    throw new TypeError(`tool ${definition.name}: transaction must be "call" or "statement"`);
  }
  return Object.freeze({ ...definition });
}
