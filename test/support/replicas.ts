import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config/load.js";
import type { AppMigration } from "../../src/isolation/migrations.js";
import { TenantryApp } from "../../src/server/app.js";
import type { TestIssuer } from "../../src/testing/test-issuer.js";
import type { ToolDefinition } from "../../src/tools/define-tool.js";

/** The public URL every replica in these tests claims (requests carry no Origin, so it is never checked). */
export const REPLICA_BASE_URL = "https://mcp.tenantry.test";
/** The token audience every replica accepts, so one token works on all of them. */
export const REPLICA_AUDIENCE = `${REPLICA_BASE_URL}/mcp`;

/** One in-process server of a multi-replica deployment. */
export interface Replica {
  readonly app: TenantryApp;
  /** `http://127.0.0.1:<port>/mcp` */
  readonly mcpUrl: string;
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Starts a TenantryApp the way `tenantry serve` would, verifying Auth0-shaped tokens of `issuer`,
 * with `config` tables merged over the defaults (pass the shared `database` / `rate_limit`).
 */
export async function startReplica(options: {
  issuer: TestIssuer;
  config?: Record<string, Record<string, unknown>>;
  tools?: ToolDefinition[];
  migrations?: readonly AppMigration[];
  replicaId?: string;
}): Promise<Replica> {
  const dir = await mkdtemp(join(tmpdir(), "tenantry-replica-"));
  const extra = options.config ?? {};
  const config = parseConfig(
    {
      ...extra,
      server: { host: "127.0.0.1", port: 0, base_url: REPLICA_BASE_URL, ...extra.server },
      auth: {
        provider: "auth0",
        issuer: `${options.issuer.issuer}/`,
        audience: REPLICA_AUDIENCE,
        jwks_uri: options.issuer.jwksUri,
        ...extra.auth,
      },
      database: { data_dir: join(dir, "data"), ...extra.database },
      storage: { root: join(dir, "objects"), ...extra.storage },
      audit: { path: join(dir, "audit.jsonl"), ...extra.audit },
      lifecycle: { archive_dir: join(dir, "archive"), ...extra.lifecycle },
    },
    "replica",
    {},
  );
  const app = new TenantryApp(config, {
    logger: false,
    memoryDatabase: true,
    controlFile: false,
    ...(options.replicaId ? { replicaId: options.replicaId } : {}),
  });
  for (const tool of options.tools ?? []) app.tool(tool);
  if (options.migrations) app.migrations([...options.migrations]);
  try {
    const { url } = await app.listen({ port: 0, host: "127.0.0.1" });
    return {
      app,
      url,
      mcpUrl: `${url}/mcp`,
      async close() {
        await app.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await app.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** What one raw MCP POST returned. */
export interface McpReply {
  status: number;
  headers: Headers;
  /** The parsed JSON body (a JSON-RPC response, or `{error, message}` before dispatch). */
  body: Record<string, unknown>;
}

let nextId = 1;

/**
 * One JSON-RPC request POSTed to `/mcp` without an MCP client: stateless servers need no
 * `initialize` first, and the HTTP status and rate-limit headers stay visible.
 */
export function postMcp(
  mcpUrl: string,
  token: string,
  method: string,
  params: Record<string, unknown> = {},
): Promise<McpReply> {
  return postJsonRpc(mcpUrl, token, { jsonrpc: "2.0", id: nextId++, method, params });
}

/**
 * POSTs `payload` (one JSON-RPC message, or an array of them: a batch) to `/mcp` as `token`, with
 * `headers` added. The body is parsed as JSON (`{}` when empty).
 */
export async function postJsonRpc(
  mcpUrl: string,
  token: string,
  payload: unknown,
  headers: Record<string, string> = {},
): Promise<McpReply> {
  const res = await fetch(mcpUrl, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${token}`,
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
      ...headers,
    },
    body: JSON.stringify(payload),
  });
  const text = await res.text();
  return {
    status: res.status,
    headers: res.headers,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
  };
}

/** `tools/call` of `name` with `args`. */
export function callTool(mcpUrl: string, token: string, name: string, args: Record<string, unknown> = {}) {
  return postMcp(mcpUrl, token, "tools/call", { name, arguments: args });
}

/** Polls `probe` every 20 ms until it returns true; returns the milliseconds it took, or throws after `timeoutMs`. */
export async function pollUntil(
  probe: () => Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<number> {
  const started = performance.now();
  for (;;) {
    if (await probe()) return performance.now() - started;
    if (performance.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
