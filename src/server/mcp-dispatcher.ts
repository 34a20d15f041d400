import { LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import { TenantryError } from "../errors.js";
import type { TenantScope } from "../tenancy/context.js";
import type { TenantRecord } from "../tenancy/tenant.js";
import type { ToolContext } from "../tools/tool-context.js";
import type { ToolRegistry } from "../tools/tool-registry.js";
import {
  type JsonRpcId,
  type JsonRpcRequest,
  type JsonRpcResponse,
  RPC,
  rpcError,
  rpcResult,
} from "./json-rpc.js";
import { inToolSpan } from "./tracing.js";

/** Per-call handles (`ctx.db`, `ctx.storage`) with a hook to commit or roll back when the tool ends. */
export interface CallResources {
  readonly db: ToolContext["db"];
  readonly storage: ToolContext["storage"];
  finish(ok: boolean): Promise<void>;
}

export interface ResourceFactory {
  open(scope: TenantScope & { kind: "tenant" }, record: TenantRecord): CallResources;
}

/** What the dispatcher learns about a request, for the audit event. */
export interface DispatchNotes {
  method: string;
  tool: string | null;
  outcome: "ok" | "error" | "denied";
  errorCode: string | null;
}

export interface DispatchState {
  readonly scope: TenantScope;
  readonly record: TenantRecord | undefined;
  readonly requestId: string;
  readonly log: Logger;
  readonly notes: DispatchNotes;
}

export interface DispatcherOptions {
  name: string;
  version: string;
  instructions?: string;
  /** Hands admin tools their services; tenant tools get tenant-bound resources. */
  adminContext?: (scope: TenantScope & { kind: "global" }, state: DispatchState) => Record<string, unknown>;
}

const UNKNOWN_TOOL = (name: string) => `Unknown tool: ${name}`;

/**
 * MCP over JSON-RPC, without building anything per request: the tool registry is compiled once,
 * and each message is one switch. Unknown and denied tools get the same error, word for word.
 */
export class McpDispatcher {
  readonly #tools: ToolRegistry;
  readonly #resources: ResourceFactory;
  readonly #options: DispatcherOptions;

  constructor(tools: ToolRegistry, resources: ResourceFactory, options: DispatcherOptions) {
    this.#tools = tools;
    this.#resources = resources;
    this.#options = options;
  }

  async request(message: JsonRpcRequest & { id: JsonRpcId }, state: DispatchState): Promise<JsonRpcResponse> {
    state.notes.method = message.method;
    const params = message.params ?? {};
    switch (message.method) {
      case "initialize":
        return rpcResult(message.id, this.#initialize(params));
      case "ping":
        return rpcResult(message.id, {});
      case "tools/list":
        return rpcResult(message.id, { tools: this.#tools.list(state.scope, state.record) });
      case "tools/call":
        return this.#call(message.id, params, state);
      case "resources/list":
        return rpcResult(message.id, { resources: [] });
      case "resources/templates/list":
        return rpcResult(message.id, { resourceTemplates: [] });
      case "prompts/list":
        return rpcResult(message.id, { prompts: [] });
      default:
        state.notes.outcome = "error";
        state.notes.errorCode = "method_not_found";
        return rpcError(message.id, RPC.methodNotFound, `Method not found: ${message.method}`);
    }
  }

  #initialize(params: Record<string, unknown>): Record<string, unknown> {
    const requested = params.protocolVersion;
    const protocolVersion =
      typeof requested === "string" && SUPPORTED_PROTOCOL_VERSIONS.includes(requested)
        ? requested
        : LATEST_PROTOCOL_VERSION;
    return {
      protocolVersion,
      capabilities: { tools: { listChanged: false } },
      serverInfo: { name: this.#options.name, version: this.#options.version },
      ...(this.#options.instructions ? { instructions: this.#options.instructions } : {}),
    };
  }

  async #call(
    id: JsonRpcId,
    params: Record<string, unknown>,
    state: DispatchState,
  ): Promise<JsonRpcResponse> {
    const name = params.name;
    if (typeof name !== "string") {
      state.notes.outcome = "error";
      state.notes.errorCode = "invalid_params";
      return rpcError(id, RPC.invalidParams, "params.name must be a string");
    }
    state.notes.tool = name.slice(0, 128);
    const tool = this.#tools.resolve(name, state.scope, state.record);
    if (!tool) {
      state.notes.outcome = "denied";
      state.notes.errorCode = "unknown_tool";
      return rpcError(id, RPC.invalidParams, UNKNOWN_TOOL(name));
    }
    const parsed = tool.definition.input.safeParse(params.arguments ?? {});
    if (!parsed.success) {
      state.notes.outcome = "error";
      state.notes.errorCode = "invalid_arguments";
      const why = parsed.error.issues.map((i) => `${i.path.join(".") || "(input)"}: ${i.message}`).join("; ");
      return rpcResult(id, toolError(`Invalid arguments for tool ${name}: ${why}`));
    }
    const scope = state.scope;
    let resources: CallResources | undefined;
    const controller = new AbortController();
    try {
      let ctx: ToolContext;
      if (scope.kind === "tenant") {
        resources = this.#resources.open(scope, state.record!);
        ctx = {
          tenant: scope.tenant,
          tenantRecord: state.record!,
          db: resources.db,
          storage: resources.storage,
          log: state.log,
          requestId: state.requestId,
          signal: controller.signal,
        };
      } else {
        ctx = {
          log: state.log,
          requestId: state.requestId,
          signal: controller.signal,
          ...this.#options.adminContext?.(scope, state),
        } as unknown as ToolContext;
      }
      const output = await inToolSpan(
        name,
        scope.kind === "tenant" ? scope.tenant.tenantId : undefined,
        async () => tool.definition.run(parsed.data, ctx),
      );
      await resources?.finish(true);
      state.notes.outcome = "ok";
      return rpcResult(id, toCallResult(output));
    } catch (error) {
      controller.abort();
      await resources?.finish(false).catch(() => {});
      state.notes.outcome = "error";
      if (error instanceof TenantryError) {
        state.notes.errorCode = error.code;
        return rpcResult(id, toolError(`${error.code}: ${error.message}`));
      }
      state.notes.errorCode = "tool_failed";
      state.log.error({ err: error, tool: name }, "tool failed");
      return rpcResult(id, toolError(`Tool ${name} failed`));
    }
  }
}

function toolError(text: string): Record<string, unknown> {
  return { content: [{ type: "text", text }], isError: true };
}

/** A tool may return a full MCP result (`{content: [...]}`) or any JSON value, sent as text and structured content. */
function toCallResult(output: unknown): Record<string, unknown> {
  if (
    typeof output === "object" &&
    output !== null &&
    Array.isArray((output as { content?: unknown }).content)
  ) {
    return output as Record<string, unknown>;
  }
  const text = typeof output === "string" ? output : JSON.stringify(output ?? null);
  const structured = typeof output === "object" && output !== null && !Array.isArray(output);
  return structured
    ? { content: [{ type: "text", text }], structuredContent: output }
    : { content: [{ type: "text", text }] };
}
