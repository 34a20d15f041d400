import { z } from "zod";
import { TenantService, type TenantServiceDeps } from "../../src/admin/tenant-service.js";
import type { AppMigration } from "../../src/isolation/migrations.js";
import type { Harness } from "../../src/testing/harness.js";
import { defineTool } from "../../src/tools/define-tool.js";

/** A raw JSON-RPC call on /mcp (stateless), with the response's status, headers and body. */
export async function mcp(
  h: Pick<Harness, "mcpUrl">,
  token: string | undefined,
  method: string,
  params: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const res = await fetch(h.mcpUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/json, text/event-stream",
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
  });
  const text = await res.text();
  return {
    status: res.status,
    headers: res.headers,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
  };
}

/** A call on /admin/api with a bearer token. */
export async function adminApi(
  h: Pick<Harness, "url">,
  token: string | undefined,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const res = await fetch(`${h.url}/admin/api${path}`, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return {
    status: res.status,
    headers: res.headers,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
  };
}

/** The structured result of a tools/call made with `mcp()`. */
export function toolResult<T = Record<string, unknown>>(r: { body: Record<string, unknown> }): T {
  const result = r.body.result as { structuredContent?: T; isError?: boolean; content?: { text: string }[] };
  if (!result || result.isError) throw new Error(`tool failed: ${JSON.stringify(r.body)}`);
  return result.structuredContent as T;
}

/** A tool that counts its runs: proves a refused request did no work. */
export function counterTool() {
  const state = { runs: 0 };
  const tool = defineTool({
    name: "count",
    description: "Counts calls.",
    input: z.object({ delay_ms: z.number().int().min(0).max(1000).optional() }),
    async run(input, ctx) {
      state.runs++;
      if (input.delay_ms) await new Promise((r) => setTimeout(r, input.delay_ms));
      return { tenant: ctx.tenant.tenantId, user: ctx.tenant.userId, runs: state.runs };
    },
  });
  return { tool, state };
}

/**
 * A child table with a foreign key to `notes`, a serial id and a bytea column: restore must keep
 * parents before children, values exact, and sequences past the restored ids.
 */
export const tagMigrations: AppMigration[] = [
  {
    version: 2,
    name: "test_note_tags",
    sql: `CREATE TABLE IF NOT EXISTS note_tags (
            id serial PRIMARY KEY,
            note_id uuid NOT NULL REFERENCES notes(id) ON DELETE CASCADE,
            tag text NOT NULL,
            blob bytea,
            weight numeric
          );`,
    tenantTables: ["note_tags"],
  },
];

/** Adds a tag to a note, for the caller's tenant. */
export const tagAdd = defineTool({
  name: "tag_add",
  description: "Tag a note.",
  input: z.object({ note_id: z.string(), tag: z.string(), weight: z.string() }),
  async run(input, ctx) {
    const r = await ctx.db.query<{ id: number }>(
      "INSERT INTO note_tags (note_id, tag, blob, weight) VALUES ($1, $2, $3, $4::numeric) RETURNING id",
      [input.note_id, input.tag, Buffer.from([0, 1, 2, 255]), input.weight],
    );
    return { id: Number(r.rows[0]!.id) };
  },
});

/**
 * Another replica's TenantService on the harness's databases, registry, storage and audit log:
 * its own leases, claims and clock (`deps` overrides, e.g. `restoreLeaseMs`, `now`).
 */
export function otherReplica(h: Harness, deps: Partial<TenantServiceDeps> = {}): TenantService {
  return new TenantService({
    registry: h.app.registry,
    isolation: h.app.isolation,
    objects: h.app.objects,
    audit: h.app.audit,
    replica: "other-replica",
    db: h.app.dbs.admin,
    archiveDir: h.app.config.lifecycle.archive_dir,
    retentionDays: 30,
    settleMs: 0,
    ...deps,
  });
}
