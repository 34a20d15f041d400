import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FeatureFlagValue } from "../../src/tenancy/tenant.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import type { ToolDefinition } from "../../src/tools/define-tool.js";
import { buildTool, type ToolSpec } from "../support/tool-specs.js";

/*
 * The one authorization rule over the real MCP server: a harness, the official SDK client, and
 * tenant configs changed through TenantService (what `tenantry tenants update` calls). For random
 * allowed_tools, feature flags and token scopes, what `tools/list` shows each tenant and user is
 * exactly what `tools/call` accepts, it matches the rule, and a denied tool fails exactly like a
 * tool that does not exist. Every run changes the config and the very next request must see it
 * (in-process invalidation on embedded PGlite).
 */

const SCOPES = ["notes:read", "notes:write", "docs:read"];
const FEATURES = ["beta", "export", "toString"];
const FLAG_VALUES: readonly [FeatureFlagValue, boolean][] = [
  [true, true],
  [false, false],
  [1, true],
  [0, false],
  ["on", true],
  ["off", false],
  ["false", false],
  ["", false],
];
const MISSING = "zz_missing_tool";

// Fixed edge cases, then a random pool (its seed is in every failure message).
const FIXED: ToolSpec[] = [
  { name: "plain" },
  { name: "needs_beta", requiredFeature: "beta" },
  { name: "needs_write", requiredScopes: ["notes:write"] },
  { name: "needs_both", requiredScopes: ["notes:read", "docs:read"], requiredFeature: "export" },
  { name: "needs_tostring", requiredFeature: "toString" },
  { name: "admin_only", admin: true },
];
const POOL_SEED = Number(process.env.TENANTRY_FC_POOL_SEED ?? Date.now() % 1_000_000);
const RANDOM = fc
  .sample(
    fc.array(
      fc.record(
        {
          requiredScopes: fc.subarray(SCOPES, { maxLength: 2 }),
          requiredFeature: fc.constantFrom(...FEATURES),
        },
        { requiredKeys: [] },
      ),
      { minLength: 4, maxLength: 4 },
    ),
    { seed: POOL_SEED, numRuns: 1 },
  )[0]!
  .map((spec, i): ToolSpec => ({ name: `r_${i}`, ...spec }));
const POOL = [...FIXED, ...RANDOM];
const NAMES = POOL.map((t) => t.name);

let invocations = 0;
const countedTool = (spec: ToolSpec): ToolDefinition =>
  buildTool(spec, () => {
    invocations++;
    return { ok: spec.name };
  });

interface TenantSetup {
  allowedTools: string[];
  flags: [string, readonly [FeatureFlagValue, boolean]][];
  users: string[][];
}

const tenantSetup: fc.Arbitrary<TenantSetup> = fc.record({
  allowedTools: fc.oneof(fc.constant<string[]>([]), fc.subarray([...NAMES, "ghost"], { minLength: 1 })),
  flags: fc.uniqueArray(fc.tuple(fc.constantFrom(...FEATURES), fc.constantFrom(...FLAG_VALUES)), {
    selector: ([k]) => k,
  }),
  users: fc.array(fc.subarray(SCOPES), { minLength: 1, maxLength: 2 }),
});

/** The rule as DESIGN.md states it, independently of access.ts. */
function expectedVisible(setup: TenantSetup, scopes: string[]): string[] {
  return POOL.filter((t) => {
    if (t.admin) return false;
    if (setup.allowedTools.length > 0 && !setup.allowedTools.includes(t.name)) return false;
    if (t.requiredFeature !== undefined) {
      const flag = setup.flags.find(([k]) => k === t.requiredFeature);
      if (!flag?.[1][1]) return false;
    }
    return (t.requiredScopes ?? []).every((s) => scopes.includes(s));
  }).map((t) => t.name);
}

/** `tools/call` of `name`: "ok", or the JSON-RPC error with the name replaced by a placeholder. */
async function tryCall(client: Client, name: string): Promise<"ok" | { code: number; message: string }> {
  try {
    const result = await client.callTool({ name, arguments: {} });
    if (result.isError) throw new Error(`${name} ran but failed: ${JSON.stringify(result.content)}`);
    return "ok";
  } catch (error) {
    if (!(error instanceof McpError)) throw error;
    expect(error.data).toBeUndefined();
    return { code: error.code, message: error.message.replaceAll(name, "<name>") };
  }
}

describe("tools/list and tools/call agree over MCP (property)", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      tenants: [{ id: "acme" }, { id: "globex" }],
      tools: POOL.map(countedTool),
      // The property sends ~1500 requests; rate limits are another test's business.
      config: { auth: { multi_tenant: { default_rate_limit: 1_000_000 } } },
    });
  });
  afterAll(async () => h?.close());

  it("for random allowed_tools, flags and scopes, every tenant and user can call exactly what it is shown", async () => {
    const unknown = await tryCall(h.tenant("acme").client, MISSING);
    expect(unknown).toEqual({ code: -32602, message: "MCP error -32602: Unknown tool: <name>" });
    let runs = 0;
    let denied = 0;
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(fc.tuple(tenantSetup, tenantSetup), async (setups) => {
        runs++;
        const ids = ["acme", "globex"] as const;
        for (const [i, id] of ids.entries()) {
          const s = setups[i]!;
          await h.app.tenants.update({ id: "t" }, id, {
            allowedTools: s.allowedTools,
            featureFlags: Object.fromEntries(s.flags.map(([k, [v]]) => [k, v])),
            replaceFlags: true,
          });
        }
        for (const [i, id] of ids.entries()) {
          const s = setups[i]!;
          for (const [u, scopes] of s.users.entries()) {
            const token = await h.token(id, { sub: `auth0|${id}-user-${runs}-${u}`, scopes });
            const client = await h.connect(token);
            try {
              const listed = (await client.listTools()).tools.map((t) => t.name);
              const why = `pool seed ${POOL_SEED}, tenant ${id}, scopes [${scopes}]`;
              expect(listed, why).toEqual(expectedVisible(s, scopes));
              const acceptedNames: string[] = [];
              for (const name of [...NAMES, MISSING, "ghost"]) {
                const outcome = await tryCall(client, name);
                if (outcome === "ok") acceptedNames.push(name);
                // Denied and unknown: the same code and the same message, word for word.
                else expect(outcome, `${why}, ${name}`).toEqual(unknown);
              }
              expect(acceptedNames, why).toEqual(listed);
              accepted += acceptedNames.length;
              denied += NAMES.length - acceptedNames.length;
            } finally {
              await client.close();
            }
          }
        }
      }),
      { numRuns: 20 },
    );
    // The runs exercised both outcomes.
    expect(accepted).toBeGreaterThan(20);
    expect(denied).toBeGreaterThan(20);
    expect(invocations).toBe(accepted);
  }, 60_000);

  it("a global admin sees the admin tools only and cannot call tenant tools", async () => {
    const client = await h.connect(await h.adminToken());
    try {
      // Built-in admin tools (admin_list_tenants, …) are listed too; tenant tools never are.
      const listed = (await client.listTools()).tools.map((t) => t.name);
      expect(listed).toContain("admin_only");
      for (const spec of POOL) if (!spec.admin) expect(listed).not.toContain(spec.name);
      const unknown = await tryCall(client, MISSING);
      expect(await tryCall(client, "plain")).toEqual(unknown);
      expect(await tryCall(client, "admin_only")).toBe("ok");
    } finally {
      await client.close();
    }
  });

  it("on the wire, a denied tool's response is the unknown tool's response with another name", async () => {
    await h.app.tenants.update({ id: "t" }, "acme", {
      allowedTools: ["plain"],
      featureFlags: {},
      replaceFlags: true,
    });
    const token = await h.token("acme", { scopes: [] });
    const call = async (name: string) => {
      const res = await fetch(h.mcpUrl, {
        method: "POST",
        headers: {
          Authorization: `Bearer ${token}`,
          "Content-Type": "application/json",
          Accept: "application/json, text/event-stream",
        },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 7,
          method: "tools/call",
          params: { name, arguments: {} },
        }),
      });
      return { status: res.status, body: (await res.text()).replaceAll(name, "<name>") };
    };
    const unknown = await call(MISSING);
    expect(unknown.status).toBe(200);
    expect(JSON.parse(unknown.body)).toEqual({
      jsonrpc: "2.0",
      id: 7,
      error: { code: -32602, message: "Unknown tool: <name>" },
    });
    // Denied by allowed_tools, by feature flag, by scope, and admin-only: all byte-identical.
    for (const name of ["needs_beta", "needs_write", "admin_only", "r_0"])
      expect(await call(name)).toEqual(unknown);
    expect((await call("plain")).status).toBe(200);
  });
});
