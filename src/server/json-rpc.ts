/** JSON-RPC 2.0 as MCP uses it. Parsed by hand: this runs on every request. */
export type JsonRpcId = string | number;

export interface JsonRpcRequest {
  jsonrpc: "2.0";
  id?: JsonRpcId;
  method: string;
  params?: Record<string, unknown>;
}

export interface JsonRpcResponse {
  jsonrpc: "2.0";
  id: JsonRpcId | null;
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

export const RPC = {
  parseError: -32700,
  invalidRequest: -32600,
  methodNotFound: -32601,
  invalidParams: -32602,
  internalError: -32603,
  /** The SDK's transport uses this for "session not found" / bad session. */
  connectionClosed: -32000,
  sessionNotFound: -32001,
} as const;

export function rpcError(id: JsonRpcId | null, code: number, message: string): JsonRpcResponse {
  return { jsonrpc: "2.0", id, error: { code, message } };
}

export function rpcResult(id: JsonRpcId, result: unknown): JsonRpcResponse {
  return { jsonrpc: "2.0", id, result };
}

/**
 * A result already serialised (a tool's full MCP result, stringified once to check that JSON can
 * carry it): {@link responseText} splices the text in rather than serialising the value again.
 * `toJSON` keeps any other serialiser correct, at the cost of a parse.
 */
export class RawJson {
  readonly text: string;

  constructor(text: string) {
    this.text = text;
  }

  toJSON(): unknown {
    return JSON.parse(this.text);
  }
}

/** The JSON text of a response: `JSON.stringify`, except that a {@link RawJson} result is spliced in as it is. */
export function responseText(response: JsonRpcResponse): string {
  const result = response.result;
  if (!(result instanceof RawJson)) return JSON.stringify(response);
  return `{"jsonrpc":"2.0","id":${JSON.stringify(response.id)},"result":${result.text}}`;
}

/** A message is a request when it has a method and an id, a notification when it has a method only. */
export type Incoming =
  | { kind: "request"; message: JsonRpcRequest & { id: JsonRpcId } }
  | { kind: "notification"; message: JsonRpcRequest }
  | { kind: "response" }
  | { kind: "invalid"; id: JsonRpcId | null; reason: string };

export function classify(value: unknown): Incoming {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { kind: "invalid", id: null, reason: "a JSON-RPC message must be an object" };
  }
  const m = value as Record<string, unknown>;
  const id =
    typeof m.id === "string" || (typeof m.id === "number" && Number.isFinite(m.id)) ? m.id : undefined;
  if (m.jsonrpc !== "2.0") return { kind: "invalid", id: id ?? null, reason: 'jsonrpc must be "2.0"' };
  if (typeof m.method !== "string") {
    if (id !== undefined && ("result" in m || "error" in m)) return { kind: "response" };
    // An error response need not name a request (MCP leaves its id out, JSON-RPC sets it to null).
    if ((m.id === undefined || m.id === null) && "error" in m) return { kind: "response" };
    return { kind: "invalid", id: id ?? null, reason: "method must be a string" };
  }
  if (
    m.params !== undefined &&
    (typeof m.params !== "object" || m.params === null || Array.isArray(m.params))
  ) {
    return { kind: "invalid", id: id ?? null, reason: "params must be an object" };
  }
  if ("id" in m && m.id !== undefined) {
    if (id === undefined) return { kind: "invalid", id: null, reason: "id must be a string or a number" };
    return { kind: "request", message: m as unknown as JsonRpcRequest & { id: JsonRpcId } };
  }
  return { kind: "notification", message: m as unknown as JsonRpcRequest };
}
