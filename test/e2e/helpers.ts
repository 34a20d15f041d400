/**
 * Shared plumbing for the end-to-end tests: a real Tenantry server on a random port of 127.0.0.1
 * (embedded in-memory PGlite), the official MCP SDK client, and raw `fetch` for what a client
 * library would hide (status codes, headers, bodies of refusals).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { LATEST_PROTOCOL_VERSION } from "@modelcontextprotocol/sdk/types.js";
import { expect } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { TenantryApp } from "../../src/server/app.js";
import type { NewTenant } from "../../src/tenancy/tenant.js";
import type { ToolDefinition } from "../../src/tools/define-tool.js";

/** The public URL every test server claims to be (the server never checks Host, so it need not resolve). */
export const BASE_URL = "https://mcp.tenantry.test";
export const RESOURCE = `${BASE_URL}/mcp`;
export const METADATA_URL = `${BASE_URL}/.well-known/oauth-protected-resource/mcp`;
export const INVALID_TOKEN_CHALLENGE = `Bearer resource_metadata="${METADATA_URL}", error="invalid_token"`;

/** A Tenantry server under test. */
export interface E2eServer {
  readonly app: TenantryApp;
  /** `http://127.0.0.1:<port>` — where it really listens. */
  readonly url: string;
  /** `<url>/mcp` */
  readonly mcpUrl: string;
  /** The data directory (dev issuer keys live here). */
  readonly dataDir: string;
  /** A new SDK client connected with `token`; closed by `close()`. */
  connect(token: string): Promise<Client>;
  close(): Promise<void>;
}

export interface E2eServerOptions {
  /** `tenantry.toml` tables merged over the defaults (`server.base_url`, temporary directories). */
  config: Record<string, Record<string, unknown>>;
  tools: ToolDefinition[];
  tenants: Omit<NewTenant, "name">[];
}

/**
 * Starts a server the way an embedder would: `parseConfig` + `new TenantryApp` + `listen`, with its
 * files in a fresh temporary directory and tenants provisioned through the tenant service.
 */
export async function startServer(options: E2eServerOptions): Promise<E2eServer> {
  const dir = await mkdtemp(join(tmpdir(), "tenantry-e2e-"));
  const dataDir = join(dir, "data");
  const c = options.config;
  const config = parseConfig(
    {
      ...c,
      server: { base_url: BASE_URL, ...c.server },
      database: { data_dir: dataDir, ...c.database },
      storage: { root: join(dir, "objects"), ...c.storage },
      audit: { path: join(dir, "audit.jsonl"), ...c.audit },
      lifecycle: { archive_dir: join(dir, "archive"), ...c.lifecycle },
    },
    "e2e",
    {},
  );
  const app = new TenantryApp(config, { logger: false, memoryDatabase: true, controlFile: false });
  for (const tool of options.tools) app.tool(tool);
  const clients: Client[] = [];
  const close = async () => {
    for (const client of clients) await client.close().catch(() => {});
    await app.close();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const { url } = await app.listen({ port: 0, host: "127.0.0.1" });
    for (const t of options.tenants)
      await app.tenants.create({ id: "e2e" }, { name: `Tenant ${t.id}`, ...t });
    const mcpUrl = `${url}/mcp`;
    return {
      app,
      url,
      mcpUrl,
      dataDir,
      async connect(token) {
        const client = new Client({ name: "tenantry-e2e", version: "1.0.0" });
        await client.connect(
          new StreamableHTTPClientTransport(new URL(mcpUrl), {
            requestInit: { headers: { Authorization: `Bearer ${token}` } },
          }),
        );
        clients.push(client);
        return client;
      },
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}

/** What the `whoami` demo tool returns. */
export interface Identity {
  tenantId: string;
  tenantName: string;
  userId: string;
  scopes: string[];
  issuer: string;
}

/** Calls `whoami` through an SDK client. */
export async function whoamiVia(client: Client): Promise<Identity> {
  const result = await client.callTool({ name: "whoami", arguments: {} });
  expect(result.isError, JSON.stringify(result)).toBeFalsy();
  return result.structuredContent as unknown as Identity;
}

/** Connects a fresh SDK client with `token`, asks `whoami`, and disconnects. */
export async function whoamiAs(server: E2eServer, token: string): Promise<Identity> {
  const client = await server.connect(token);
  try {
    return await whoamiVia(client);
  } finally {
    await client.close();
  }
}

let nextId = 1;

export function initializeMessage(): Record<string, unknown> {
  return {
    jsonrpc: "2.0",
    id: nextId++,
    method: "initialize",
    params: {
      protocolVersion: LATEST_PROTOCOL_VERSION,
      capabilities: {},
      clientInfo: { name: "tenantry-e2e-raw", version: "1.0.0" },
    },
  };
}

export function callToolMessage(name: string, args: Record<string, unknown> = {}): Record<string, unknown> {
  return { jsonrpc: "2.0", id: nextId++, method: "tools/call", params: { name, arguments: args } };
}

export interface PostOptions {
  /** Sent as `Authorization: Bearer <token>` when given. */
  token?: string;
  /** A JSON value (serialised) or a raw string body. Default: an initialize request. */
  body?: unknown;
  headers?: Record<string, string>;
  method?: string;
}

/** One raw HTTP request to `/mcp`, as a non-SDK client would send it. */
export function post(server: { mcpUrl: string }, options: PostOptions = {}): Promise<Response> {
  const method = options.method ?? "POST";
  const body = options.body ?? initializeMessage();
  const headers: Record<string, string> = {
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    ...(options.token !== undefined ? { authorization: `Bearer ${options.token}` } : {}),
    ...options.headers,
  };
  return fetch(server.mcpUrl, {
    method,
    headers,
    ...(method === "GET" || method === "HEAD" || method === "DELETE"
      ? {}
      : { body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
}

/**
 * Asserts a refusal before MCP dispatch, exactly as DESIGN.md's table states it: the status, a
 * JSON body `{error, message}` with the code, and for a 401 the exact `WWW-Authenticate` challenge.
 */
export async function expectRefused(response: Response, status: number, code: string): Promise<void> {
  const text = await response.text();
  expect(response.status, text).toBe(status);
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  const body = JSON.parse(text) as Record<string, unknown>;
  expect(Object.keys(body).sort()).toEqual(["error", "message"]);
  expect(body.error).toBe(code);
  expect(typeof body.message).toBe("string");
  expect((body.message as string).length).toBeGreaterThan(0);
  if (status === 401) expect(response.headers.get("www-authenticate")).toBe(INVALID_TOKEN_CHALLENGE);
  else expect(response.headers.get("www-authenticate")).toBeNull();
}

/** A raw `whoami` call that must succeed: the server is still up and still answers correctly. */
export async function expectServing(
  server: { mcpUrl: string },
  token: string,
  tenantId: string,
): Promise<void> {
  const response = await post(server, { token, body: callToolMessage("whoami") });
  const text = await response.text();
  expect(response.status, text).toBe(200);
  const reply = JSON.parse(text) as { result?: { structuredContent?: { tenantId?: string } } };
  expect(reply.result?.structuredContent?.tenantId).toBe(tenantId);
}

/** Runs `check` for both tenants and asserts that neither token ever yields the other tenant. */
export async function expectOwnIdentities(
  ids: readonly [string, string],
  whoFor: (tenantId: string) => Promise<Identity>,
  check: (identity: Identity, tenantId: string) => void,
): Promise<void> {
  const [a, b] = ids;
  const [ia, ib] = [await whoFor(a), await whoFor(b)];
  check(ia, a);
  check(ib, b);
  expect(ia.tenantId).not.toBe(ib.tenantId);
  expect(ia.tenantId).toBe(a);
  expect(ib.tenantId).toBe(b);
}
