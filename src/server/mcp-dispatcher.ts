import { LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from "@modelcontextprotocol/sdk/types.js";
import type { Span } from "@opentelemetry/api";
import type { Logger } from "pino";
import { TenantryError } from "../errors.js";
import type { TenantContext, TenantScope } from "../tenancy/context.js";
import type { TenantRecord } from "../tenancy/tenant.js";
import type { ToolContext } from "../tools/tool-context.js";
import type { ToolRegistry } from "../tools/tool-registry.js";
import {
  type JsonRpcId,
  type JsonRpcRequest,
  type JsonRpcResponse,
  RawJson,
  RPC,
  rpcError,
  rpcResult,
} from "./json-rpc.js";
import { inToolSpan } from "./tracing.js";

/**
 * Per-call handles (`ctx.db`, `ctx.storage`) with a hook to commit or roll back when the tool ends.
 * Implementations create each handle on first use, so a tool that touches neither pays for neither;
 * `finish` returns `undefined` when there is nothing to commit.
 */
export interface CallResources {
  readonly db: ToolContext["db"];
  readonly storage: ToolContext["storage"];
  finish(ok: boolean): Promise<void> | undefined;
}

export interface ResourceFactory {
  /** `transaction` is the tool's `ToolDefinition.transaction` (how `ctx.db` groups statements). */
  open(
    scope: TenantScope & { kind: "tenant" },
    record: TenantRecord,
    transaction: "call" | "statement",
  ): CallResources;
}

/** What the dispatcher learns about a request, for the audit event. */
export interface DispatchNotes {
  method: string;
  tool: string | null;
  outcome: "ok" | "error" | "denied";
  errorCode: string | null;
  /** Set for a batch of several requests: each request's event is recorded on its own. */
  batched?: boolean;
}

export interface DispatchState {
  readonly scope: TenantScope;
  readonly record: TenantRecord | undefined;
  readonly requestId: string;
  readonly log: Logger;
  readonly notes: DispatchNotes;
  /** The request's span, when it records (an OpenTelemetry SDK is registered and sampled it). */
  readonly span?: Span;
  /**
   * The time budget the request's tool calls share: `until` (a `performance.now()` time) is set
   * by the first call, `toolTimeoutMs` after it started. The messages of a batch share one holder,
   * so a batch of slow calls lasts one timeout in all, not one per call.
   */
  readonly budget?: { until?: number };
}

export interface DispatcherOptions {
  name: string;
  version: string;
  instructions?: string;
  /** Hands admin tools their services; tenant tools get tenant-bound resources. */
  adminContext?: (scope: TenantScope & { kind: "global" }, state: DispatchState) => Record<string, unknown>;
  /** The longest an asynchronous tool may run before its call fails with `tool_timeout`. */
  toolTimeoutMs?: number;
}

/**
 * `pending`, or a `tool_timeout` rejection after `ms`, whichever comes first. A tool cannot be
 * stopped from outside: the call ends without it (its resources are released, its signal aborted),
 * and whatever it still does with `ctx.db` or `ctx.storage` is refused.
 */
function withDeadline<T>(pending: Promise<T>, ms: number | undefined, name: string): Promise<T> {
  if (ms === undefined) return pending;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new TenantryError("tool_timeout", `Tool ${name} did not finish within ${ms} ms`)),
      ms,
    );
    pending.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

const UNKNOWN_TOOL = (name: string) => `Unknown tool: ${name}`;

/** A method or tool name as the audit log and metrics keep it: the caller chose it, so it is bounded. */
export function recordedName(name: string): string {
  return name.length > 128 ? name.slice(0, 128) : name;
}

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

  /** Answers one request; synchronously unless the tool it calls returns a promise. */
  request(
    message: JsonRpcRequest & { id: JsonRpcId },
    state: DispatchState,
  ): JsonRpcResponse | Promise<JsonRpcResponse> {
    state.notes.method = recordedName(message.method);
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

  /**
   * The milliseconds a tool call may run: the tool timeout, less what earlier calls sharing the
   * budget (a batch's) spent. `undefined`: no limit.
   */
  #timeLeft(budget: { until?: number } | undefined): number | undefined {
    const timeoutMs = this.#options.toolTimeoutMs;
    if (timeoutMs === undefined || budget === undefined) return timeoutMs;
    const now = performance.now();
    if (budget.until === undefined) {
      // The first call gets the whole timeout: (now + t) - now is not always t in floating point,
      // and a 300 ms timeout would read "299 ms" in its message.
      budget.until = now + timeoutMs;
      return timeoutMs;
    }
    // Timers run on whole milliseconds and may fire a fraction early: a call left with less than
    // that never starts, rather than starting with a budget it cannot use.
    const left = budget.until - now;
    return left < 2 ? 0 : Math.floor(left);
  }

  #call(
    id: JsonRpcId,
    params: Record<string, unknown>,
    state: DispatchState,
  ): JsonRpcResponse | Promise<JsonRpcResponse> {
    const name = params.name;
    if (typeof name !== "string") {
      state.notes.outcome = "error";
      state.notes.errorCode = "invalid_params";
      return rpcError(id, RPC.invalidParams, "params.name must be a string");
    }
    state.notes.tool = recordedName(name);
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
    const call = new ToolCall(
      scope,
      state,
      scope.kind === "tenant"
        ? this.#resources.open(scope, state.record!, tool.definition.transaction ?? "call")
        : undefined,
      this.#options,
    );
    const run = () => tool.definition.run(parsed.data, call.ctx);
    const timeoutMs = this.#timeLeft(state.budget);
    if (timeoutMs !== undefined && timeoutMs <= 0) {
      // An earlier call of the batch spent the budget: this one does not start.
      return call.failed(
        id,
        name,
        new TenantryError("tool_timeout", `Tool ${name} did not start: the request's time ran out`),
      );
    }
    if (state.span) {
      const tenantId = scope.kind === "tenant" ? scope.tenant.tenantId : undefined;
      return inToolSpan(name, tenantId, state.span, async () =>
        withDeadline(Promise.resolve(run()), timeoutMs, name),
      ).then(
        (output) => call.succeeded(id, output),
        (error: unknown) => call.failed(id, name, error),
      );
    }
    let output: unknown;
    try {
      output = run();
    } catch (error) {
      return call.failed(id, name, error);
    }
    if (output instanceof Promise) {
      return withDeadline(output, timeoutMs, name).then(
        (value) => call.succeeded(id, value),
        (error: unknown) => call.failed(id, name, error),
      );
    }
    return call.succeeded(id, output);
  }
}

/**
 * One tool call: its context, built lazily (`ctx.db`, `ctx.storage` and `ctx.signal` cost nothing
 * until the tool reads them), and its ending — commit on success, roll back and abort on failure.
 */
class ToolCall {
  readonly ctx: ToolContext;
  readonly #state: DispatchState;
  readonly #resources: CallResources | undefined;
  #controller: AbortController | undefined;

  constructor(
    scope: TenantScope,
    state: DispatchState,
    resources: CallResources | undefined,
    options: DispatcherOptions,
  ) {
    this.#state = state;
    this.#resources = resources;
    if (scope.kind === "tenant") {
      this.ctx = new TenantToolContext(scope.tenant, state, resources!, this);
    } else {
      this.ctx = {
        log: state.log.child({ request_id: state.requestId }),
        requestId: state.requestId,
        signal: this.signal,
        ...options.adminContext?.(scope, state),
      } as unknown as ToolContext;
    }
  }

  /** The call's abort signal, made on first use; aborted when the call fails. */
  get signal(): AbortSignal {
    this.#controller ??= new AbortController();
    return this.#controller.signal;
  }

  succeeded(id: JsonRpcId, output: unknown): JsonRpcResponse | Promise<JsonRpcResponse> {
    const name = this.#state.notes.tool ?? "";
    let result: RawJson;
    try {
      result = toCallResult(output);
    } catch (error) {
      // An output that is not JSON (a BigInt, a cycle) fails the call, before anything is committed.
      return this.failed(id, name, error);
    }
    const finishing = this.#resources?.finish(true);
    if (finishing === undefined) return this.#ok(id, result);
    return finishing.then(
      () => this.#ok(id, result),
      // A failed commit is a failed call: nothing the tool wrote was kept.
      (error: unknown) => this.failed(id, name, error),
    );
  }

  #ok(id: JsonRpcId, result: RawJson): JsonRpcResponse {
    this.#state.notes.outcome = "ok";
    return rpcResult(id, result);
  }

  failed(id: JsonRpcId, name: string, error: unknown): JsonRpcResponse | Promise<JsonRpcResponse> {
    this.#controller?.abort();
    const finishing = this.#resources?.finish(false);
    const answer = () => this.#error(id, name, error);
    if (finishing === undefined) return answer();
    return finishing.then(answer, answer);
  }

  #error(id: JsonRpcId, name: string, error: unknown): JsonRpcResponse {
    const notes = this.#state.notes;
    notes.outcome = "error";
    if (error instanceof TenantryError) {
      notes.errorCode = error.code;
      return rpcResult(id, toolError(`${error.code}: ${error.message}`));
    }
    notes.errorCode = "tool_failed";
    const { scope, requestId } = this.#state;
    const tenantId = scope.kind === "tenant" ? scope.tenant.tenantId : undefined;
    this.#state.log.error(
      { err: error, tool: name, tenant_id: tenantId, request_id: requestId },
      "tool failed",
    );
    return rpcResult(id, toolError(`Tool ${name} failed`));
  }
}

/** `ctx` of a tenant tool: plain fields, and the handles made on first read (a class, so it stays a small object). */
class TenantToolContext implements ToolContext {
  readonly tenant: TenantContext;
  readonly tenantRecord: TenantRecord;
  readonly requestId: string;
  readonly #parentLog: Logger;
  #log: Logger | undefined;
  readonly #resources: CallResources;
  readonly #call: ToolCall;

  constructor(tenant: TenantContext, state: DispatchState, resources: CallResources, call: ToolCall) {
    this.tenant = tenant;
    this.tenantRecord = state.record!;
    this.#parentLog = state.log;
    this.requestId = state.requestId;
    this.#resources = resources;
    this.#call = call;
  }

  /** A child logger bound to the call's tenant and request, made on first read (most tools never log). */
  get log(): Logger {
    this.#log ??= this.#parentLog.child({ tenant_id: this.tenant.tenantId, request_id: this.requestId });
    return this.#log;
  }

  get db(): ToolContext["db"] {
    return this.#resources.db;
  }

  get storage(): ToolContext["storage"] {
    return this.#resources.storage;
  }

  get signal(): AbortSignal {
    return this.#call.signal;
  }
}

function toolError(text: string): Record<string, unknown> {
  return { content: [{ type: "text", text }], isError: true };
}

/**
 * A tool's output as its MCP result, serialised once (the response splices the text in). An
 * output that is already a result (has a `content` array) goes as it is. Any other output becomes
 * one text item holding its JSON and, when that JSON is an object, `structuredContent` too: the
 * output's JSON text is written into the result twice rather than the output serialised twice.
 * An output with no JSON form (a function, a BigInt, a cycle) throws: the call fails.
 */
function toCallResult(output: unknown): RawJson {
  if (
    typeof output === "object" &&
    output !== null &&
    Array.isArray((output as { content?: unknown }).content)
  ) {
    const text: string | undefined = JSON.stringify(output);
    if (text === undefined) throw new TypeError("the tool's result has no JSON form");
    return new RawJson(text);
  }
  const text: string | undefined = typeof output === "string" ? output : JSON.stringify(output ?? null);
  if (text === undefined) throw new TypeError("the tool's result has no JSON form");
  const content = `{"content":[{"type":"text","text":${JSON.stringify(text)}}]`;
  // structuredContent must be an object: an output whose JSON is not one (an array, a Date) has none.
  const structured = typeof output !== "string" && text.startsWith("{");
  return new RawJson(structured ? `${content},"structuredContent":${text}}` : `${content}}`);
}
