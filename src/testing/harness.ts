import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Logger } from "pino";
import { parseConfig } from "../config/load.js";
import type { AppMigration } from "../isolation/data-isolation.js";
import { TenantryApp } from "../server/app.js";
import type { NewTenant } from "../tenancy/tenant.js";
import type { ToolDefinition } from "../tools/define-tool.js";
import { startTestIssuer, type TestIssuer } from "./test-issuer.js";

export interface HarnessTenantSpec extends Partial<NewTenant> {
  id: string;
  /** Leave the tenant in this state after provisioning. */
  status?: "active" | "suspended";
}

export interface HarnessOptions {
  /** How many tenants (`tenant-0` …), or their specs. Default 2. */
  tenants?: number | HarnessTenantSpec[];
  /** The tools to serve. Default: none (register your own). */
  tools?: ToolDefinition[];
  migrations?: AppMigration[];
  /** Extra `tenantry.toml` tables merged over the harness defaults (e.g. `{ database: { url } }`). */
  config?: Record<string, Record<string, unknown>>;
  logger?: Logger | false;
}

export interface HarnessTenant {
  readonly id: string;
  /** A valid Auth0-shaped token for a user of this tenant. */
  readonly token: string;
  /** An MCP client connected as that user (a tenant started `suspended` has none: reading it throws). */
  readonly client: Client;
}

/** A running Tenantry server with a test issuer, N tenants, and a connected MCP client per tenant. */
export interface Harness {
  readonly app: TenantryApp;
  readonly issuer: TestIssuer;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly mcpUrl: string;
  /** The token audience the server accepts. */
  readonly audience: string;
  readonly tenants: readonly HarnessTenant[];
  tenant(id: string): HarnessTenant;
  /** A token for `tenantId` (any id, registered or not), as a user with `scopes`. */
  token(tenantId: string | undefined, options?: { sub?: string; scopes?: string[] }): Promise<string>;
  /** A token carrying the admin scope. */
  adminToken(options?: { sub?: string }): Promise<string>;
  /** A new MCP client connected with `token`. */
  connect(token: string): Promise<Client>;
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * A suspended tenant: the server refuses it, so it has no client, and reading `client` says so
 * (not enumerable, so printing or comparing the tenant does not throw).
 */
function suspendedTenant(id: string, token: string): HarnessTenant {
  return Object.defineProperty({ id, token }, "client", {
    get(): never {
      throw new Error(
        `harness tenant ${id} is suspended: it has no client (resume it, then h.connect(token))`,
      );
    },
  }) as HarnessTenant;
}

/**
 * Starts Tenantry for a test suite: a local issuer shaped like Auth0, an embedded in-memory
 * database (or yours, via `config.database`), the tenants you name, and one MCP client per
 * tenant — what you need to prove that your tools keep tenants apart.
 *
 * @example
 * const h = await startHarness({ tenants: 2, tools: [listDocuments] });
 * const [a, b] = h.tenants;
 * await a.client.callTool({ name: "documents_put", arguments: { key: "x", content: "A" } });
 * const seen = await b.client.callTool({ name: "documents_list", arguments: {} });
 * // assert b does not see "x"
 * await h.close();
 */
export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const issuer = await startTestIssuer();
  const dir = await mkdtemp(join(tmpdir(), "tenantry-harness-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const audience = `${url}/mcp`;
  const extra = options.config ?? {};
  const config = parseConfig(
    {
      ...extra,
      server: { host: "127.0.0.1", port, base_url: url, ...extra.server },
      auth: {
        provider: "auth0",
        issuer: `${issuer.issuer}/`,
        audience,
        jwks_uri: issuer.jwksUri,
        ...extra.auth,
      },
      database: { data_dir: join(dir, "data"), ...extra.database },
      storage: { root: join(dir, "objects"), ...extra.storage },
      audit: { path: join(dir, "audit.jsonl"), ...extra.audit },
      lifecycle: { archive_dir: join(dir, "archive"), ...extra.lifecycle },
    },
    "harness",
    {},
  );
  const app = new TenantryApp(config, {
    logger: options.logger ?? false,
    memoryDatabase: true,
    controlFile: false,
  });
  for (const tool of options.tools ?? []) app.tool(tool);
  if (options.migrations) app.migrations(options.migrations);
  const clients: Client[] = [];
  let closing: Promise<void> | undefined;
  // Once, however often it is called (a test that closes its harness, then afterAll).
  const close = () =>
    (closing ??= (async () => {
      for (const c of clients) await c.close().catch(() => {});
      await app.close();
      await issuer.close();
      await rm(dir, { recursive: true, force: true });
    })());
  try {
    await app.listen({ port, host: "127.0.0.1" });
    const specs: HarnessTenantSpec[] =
      typeof options.tenants === "object"
        ? options.tenants
        : Array.from({ length: options.tenants ?? 2 }, (_, i) => ({ id: `tenant-${i}` }));
    const token = (tenantId: string | undefined, o: { sub?: string; scopes?: string[] } = {}) =>
      issuer.auth0Token({
        ...(tenantId !== undefined ? { orgId: tenantId } : {}),
        sub: o.sub ?? `auth0|user-of-${tenantId ?? "none"}`,
        audience,
        ...(o.scopes ? { scope: o.scopes.join(" ") } : {}),
      });
    const connect = async (t: string): Promise<Client> => {
      const client = new Client({ name: "tenantry-harness", version: "1.0.0" });
      const transport = new StreamableHTTPClientTransport(new URL(audience), {
        requestInit: { headers: { Authorization: `Bearer ${t}` } },
      });
      await client.connect(transport);
      clients.push(client);
      return client;
    };
    const tenants: HarnessTenant[] = [];
    for (const spec of specs) {
      const { status, ...t } = spec;
      await app.tenants.create({ id: "harness" }, { name: spec.name ?? spec.id, ...t });
      if (status === "suspended") await app.tenants.suspend({ id: "harness" }, spec.id);
      const tok = await token(spec.id);
      tenants.push(
        status === "suspended"
          ? suspendedTenant(spec.id, tok)
          : { id: spec.id, token: tok, client: await connect(tok) },
      );
    }
    return {
      app,
      issuer,
      url,
      mcpUrl: audience,
      audience,
      tenants,
      tenant(id) {
        const t = tenants.find((x) => x.id === id);
        if (!t) throw new Error(`no harness tenant ${id}`);
        return t;
      },
      token,
      adminToken: (o = {}) =>
        issuer.auth0Token({
          sub: o.sub ?? "auth0|admin",
          audience,
          scope: app.config.resolvedAuth.adminScope,
        }),
      connect,
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
