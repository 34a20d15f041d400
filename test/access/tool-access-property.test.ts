import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { TenantScope } from "../../src/tenancy/context.js";
import type { FeatureFlagValue, TenantRecord } from "../../src/tenancy/tenant.js";
import { isTruthyFlag, mayUseTool } from "../../src/tools/access.js";
import { ToolRegistry } from "../../src/tools/tool-registry.js";
import { buildTool, type ToolSpec } from "../support/tool-specs.js";

/*
 * The one authorization rule, checked at unit level against a model written independently of
 * `access.ts`: random tool pools (required scopes, required feature, admin), random tenant
 * configs (allowed_tools naming real and unknown tools, feature flags of every value shape) and
 * random callers (scopes, tenant or global admin). `tools/list` must show exactly what
 * `tools/call` resolves, and both must agree with the model.
 */

const SCOPES = ["notes:read", "notes:write", "docs:read", "admin:global", "Notes:read"];
// Features named like Object.prototype members must not read as "set" on a tenant without them.
const FEATURES = ["beta", "export", "ai", "toString", "constructor", "hasOwnProperty"];
const UNKNOWN_NAMES = ["nope", "Whoami", "tool_0 ", "__proto__", "constructor"];

/** Flag values tagged with whether they enable a feature: what an operator would expect. */
const FLAG_VALUES: readonly [FeatureFlagValue, boolean][] = [
  [true, true],
  [false, false],
  [1, true],
  [0, false],
  [2, true],
  [-1, true],
  ["on", true],
  ["yes", true],
  ["enabled", true],
  ["off", false],
  ["no", false],
  ["", false],
  ["false", false],
  ["FALSE", false],
  ["0", false],
  [" off ", false],
];

const toolSpec = (name: string): fc.Arbitrary<ToolSpec> =>
  fc.record(
    {
      name: fc.constant(name),
      requiredScopes: fc.subarray(SCOPES, { maxLength: 3 }),
      requiredFeature: fc.constantFrom(...FEATURES),
      admin: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, fc.constant(true)),
    },
    { requiredKeys: ["name"] },
  );

/** 1–8 tools with distinct names. */
const toolPool: fc.Arbitrary<ToolSpec[]> = fc
  .uniqueArray(fc.stringMatching(/^[a-z][a-z0-9_]{0,7}$/), { minLength: 1, maxLength: 8 })
  .chain((names) => fc.tuple(...names.map(toolSpec)));

const flagEntry = fc.tuple(fc.constantFrom(...FEATURES), fc.constantFrom(...FLAG_VALUES));

interface TenantConfigSpec {
  allowedTools: string[];
  flags: [string, readonly [FeatureFlagValue, boolean]][];
}

const tenantConfig = (pool: ToolSpec[]): fc.Arbitrary<TenantConfigSpec> =>
  fc.record({
    // Empty (every tool) about a third of the time; otherwise real names mixed with unknown ones.
    allowedTools: fc.oneof(
      fc.constant<string[]>([]),
      fc.subarray([...pool.map((t) => t.name), ...UNKNOWN_NAMES], { minLength: 1 }),
    ),
    flags: fc.uniqueArray(flagEntry, { selector: ([k]) => k, maxLength: FEATURES.length }),
  });

const caller = fc.record({
  global: fc.boolean(),
  scopes: fc.subarray(SCOPES),
  // A tenant without a record never reaches dispatch (admission refuses it); the rule denies anyway.
  hasRecord: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, fc.constant(false)),
});

function record(config: TenantConfigSpec): TenantRecord {
  const now = new Date();
  return {
    id: "acme",
    key: "1",
    name: "Acme",
    status: "active",
    expiresAt: null,
    config: Object.freeze({
      rateLimit: null,
      allowedTools: Object.freeze([...config.allowedTools]),
      featureFlags: Object.freeze(Object.fromEntries(config.flags.map(([k, [v]]) => [k, v]))),
    }),
    provisioningStep: null,
    archivePath: null,
    purgeAfter: null,
    createdAt: now,
    updatedAt: now,
    version: 0,
  };
}

function scopeFor(c: { global: boolean; scopes: string[] }): TenantScope {
  return c.global
    ? { kind: "global", adminId: "auth0|admin", issuer: "https://idp/", scopes: c.scopes }
    : {
        kind: "tenant",
        tenant: {
          tenantId: "acme",
          tenantName: undefined,
          userId: "u",
          scopes: c.scopes,
          issuer: "https://idp/",
        },
      };
}

/** The rule as DESIGN.md states it, written without looking at access.ts. */
function model(
  tool: ToolSpec,
  c: { global: boolean; scopes: string[]; hasRecord: boolean },
  config: TenantConfigSpec,
): boolean {
  if (c.global) return tool.admin === true;
  if (tool.admin || !c.hasRecord) return false;
  if (config.allowedTools.length > 0 && !config.allowedTools.includes(tool.name)) return false;
  if (tool.requiredFeature !== undefined) {
    const flag = config.flags.find(([k]) => k === tool.requiredFeature);
    if (!flag?.[1][1]) return false;
  }
  return (tool.requiredScopes ?? []).every((s) => c.scopes.includes(s));
}

describe("the tool access rule (unit)", () => {
  it("tools/list shows exactly what tools/call resolves, and both follow the rule", () => {
    fc.assert(
      fc.property(
        toolPool.chain((pool) => fc.tuple(fc.constant(pool), tenantConfig(pool), caller)),
        ([pool, config, c]) => {
          const registry = new ToolRegistry();
          for (const spec of pool) registry.add(buildTool(spec));
          const scope = scopeFor(c);
          const rec = c.hasRecord ? record(config) : undefined;

          const listed = registry.list(scope, rec).map((d) => d.name as string);
          const expected = pool.filter((t) => model(t, c, config)).map((t) => t.name);
          expect(listed).toEqual(expected);

          const callable = [...pool.map((t) => t.name), ...UNKNOWN_NAMES].filter(
            (name) => registry.resolve(name, scope, rec) !== undefined,
          );
          expect(new Set(callable)).toEqual(new Set(listed));
          for (const name of callable) {
            expect(mayUseTool(registry.resolve(name, scope, rec)!.definition, scope, rec)).toBe(true);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("a denied tool resolves exactly like an unknown one", () => {
    fc.assert(
      fc.property(toolPool, tenantConfig([]), caller, (pool, config, c) => {
        const registry = new ToolRegistry();
        for (const spec of pool) registry.add(buildTool(spec));
        const scope = scopeFor(c);
        const rec = c.hasRecord ? record(config) : undefined;
        for (const spec of pool) {
          const resolved = registry.resolve(spec.name, scope, rec);
          if (!model(spec, c, config)) expect(resolved).toBeUndefined();
          else expect(resolved?.definition.name).toBe(spec.name);
        }
        for (const name of UNKNOWN_NAMES) {
          if (!pool.some((t) => t.name === name)) expect(registry.resolve(name, scope, rec)).toBeUndefined();
        }
      }),
      { numRuns: 500 },
    );
  });

  it("global admins see admin tools only; tenants never see them, whatever allowed_tools says", () => {
    const registry = new ToolRegistry();
    registry.add(buildTool({ name: "whoami" }));
    registry.add(buildTool({ name: "admin_list_tenants", admin: true }));
    const rec = record({ allowedTools: ["whoami", "admin_list_tenants"], flags: [] });
    const admin = scopeFor({ global: true, scopes: ["admin:global"] });
    const user = scopeFor({ global: false, scopes: ["admin:global"] });
    expect(registry.list(admin, undefined).map((d) => d.name)).toEqual(["admin_list_tenants"]);
    expect(registry.list(user, rec).map((d) => d.name)).toEqual(["whoami"]);
    expect(registry.resolve("admin_list_tenants", user, rec)).toBeUndefined();
    expect(registry.resolve("whoami", admin, undefined)).toBeUndefined();
  });

  it("feature flags: only the tenant's own keys count, and only truthy values enable", () => {
    for (const [value, truthy] of FLAG_VALUES)
      expect(isTruthyFlag(value), JSON.stringify(value)).toBe(truthy);
    const user = scopeFor({ global: false, scopes: [] });
    const empty = record({ allowedTools: [], flags: [] });
    for (const feature of ["toString", "constructor", "hasOwnProperty", "__proto__", "valueOf"]) {
      expect(mayUseTool(buildTool({ name: "x", requiredFeature: feature }), user, empty), feature).toBe(
        false,
      );
    }
  });
});
