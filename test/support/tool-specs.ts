import { z } from "zod";
import { defineTool, type ToolDefinition } from "../../src/tools/define-tool.js";

/** The access-relevant shape of a tool, for property tests of the one authorization rule. */
export interface ToolSpec {
  name: string;
  requiredScopes?: string[];
  requiredFeature?: string;
  admin?: boolean;
}

/** A no-input tool with `spec`'s access requirements; `run` defaults to `{ ok: true }`. */
export function buildTool(spec: ToolSpec, run: () => unknown = () => ({ ok: true })): ToolDefinition {
  return defineTool({
    name: spec.name,
    description: `tool ${spec.name}`,
    input: z.object({}),
    ...(spec.requiredScopes ? { requiredScopes: spec.requiredScopes } : {}),
    ...(spec.requiredFeature ? { requiredFeature: spec.requiredFeature } : {}),
    ...(spec.admin ? { admin: true } : {}),
    run,
  });
}
