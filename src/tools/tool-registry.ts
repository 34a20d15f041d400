import { z } from "zod";
import type { TenantScope } from "../tenancy/context.js";
import type { TenantRecord } from "../tenancy/tenant.js";
import { mayUseTool } from "./access.js";
import type { ToolDefinition } from "./define-tool.js";

/** A tool with what the wire needs computed once, at registration, never per request. */
export interface CompiledTool {
  readonly definition: ToolDefinition;
  /** The `tools/list` entry. */
  readonly descriptor: Readonly<Record<string, unknown>>;
}

export class ToolRegistry {
  readonly #tools = new Map<string, CompiledTool>();

  add(definition: ToolDefinition): void {
    if (this.#tools.has(definition.name)) throw new Error(`tool ${definition.name} is already registered`);
    // `$schema` stays: MCP reads a schema without one as JSON Schema 2020-12, and a draft-07 tuple
    // (`items: [...]`) means something else there (it is not even valid). The SDK's McpServer keeps it too.
    let inputSchema: Record<string, unknown>;
    try {
      inputSchema = z.toJSONSchema(definition.input, { target: "draft-7", io: "input" }) as Record<
        string,
        unknown
      >;
    } catch (error) {
      // zod's own message names neither the tool nor what to do (z.date(), z.bigint(), z.custom()…).
      throw new TypeError(
        `tool ${definition.name}: its input schema has no JSON Schema form, which tools/list must publish (${error instanceof Error ? error.message : String(error)}); use JSON types, e.g. an ISO string instead of z.date()`,
        { cause: error },
      );
    }
    if (inputSchema.type !== "object") {
      throw new TypeError(`tool ${definition.name}: input must be a z.object(...) schema`);
    }
    const descriptor = Object.freeze({
      name: definition.name,
      description: definition.description,
      inputSchema,
      ...(definition.annotations ? { annotations: definition.annotations } : {}),
    });
    this.#tools.set(definition.name, { definition, descriptor });
  }

  get size(): number {
    return this.#tools.size;
  }

  /** The tool, if this caller may use it; `undefined` both when it does not exist and when it is denied. */
  resolve(name: string, scope: TenantScope, record: TenantRecord | undefined): CompiledTool | undefined {
    const tool = this.#tools.get(name);
    return tool && mayUseTool(tool.definition, scope, record) ? tool : undefined;
  }

  /** What `tools/list` shows this caller: exactly the tools `resolve` accepts. */
  list(scope: TenantScope, record: TenantRecord | undefined): readonly Readonly<Record<string, unknown>>[] {
    const out: Readonly<Record<string, unknown>>[] = [];
    for (const tool of this.#tools.values()) {
      if (mayUseTool(tool.definition, scope, record)) out.push(tool.descriptor);
    }
    return out;
  }

  names(): string[] {
    return [...this.#tools.keys()];
  }
}
