import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { readClaim, readScopes } from "../../src/auth/claims.js";

describe("readClaim", () => {
  const claims = {
    org_id: "org_9ybsU1dN2dKfDkBi",
    "custom:tenant_id": "acme",
    "https://example.com/org": "globex",
    "https://mcp.example.com/plan.tier": "enterprise",
    org: { id: "initech", nested: { deep: 7 } },
    "org.id": "exact-wins",
    list: ["a", "b"],
  };

  it("reads plain, colon and URL-namespaced keys by exact match", () => {
    expect(readClaim(claims, "org_id")).toBe("org_9ybsU1dN2dKfDkBi");
    expect(readClaim(claims, "custom:tenant_id")).toBe("acme");
    expect(readClaim(claims, "https://example.com/org")).toBe("globex");
    expect(readClaim(claims, "https://mcp.example.com/plan.tier")).toBe("enterprise");
  });

  it("walks dotted paths through nested objects", () => {
    expect(readClaim({ org: { id: "initech" } }, "org.id")).toBe("initech");
    expect(readClaim(claims, "org.nested.deep")).toBe(7);
    expect(readClaim(claims, "list.1")).toBe("b");
  });

  it("never resolves a namespaced URL claim through nested objects (attack)", () => {
    // A user-editable nested object must not be able to pose as the IdP's namespaced claim.
    const forged = { "https://example": { "com/org": "victim" } };
    expect(readClaim(forged, "https://example.com/org")).toBeUndefined();
  });

  it("prefers an exact key over a path", () => {
    expect(readClaim(claims, "org.id")).toBe("exact-wins");
  });

  it("returns undefined for anything absent, through non-objects, or on the prototype", () => {
    expect(readClaim(claims, "missing")).toBeUndefined();
    expect(readClaim(claims, "org.missing")).toBeUndefined();
    expect(readClaim(claims, "org_id.length")).toBeUndefined();
    expect(readClaim(claims, "org.nested.deep.x")).toBeUndefined();
    expect(readClaim(claims, "__proto__")).toBeUndefined();
    expect(readClaim(claims, "constructor")).toBeUndefined();
    expect(readClaim(claims, "org.constructor.name")).toBeUndefined();
    expect(readClaim(claims, "toString")).toBeUndefined();
    expect(readClaim({ a: null }, "a.b")).toBeUndefined();
  });
});

describe("readScopes", () => {
  it("splits space-separated strings and reads arrays", () => {
    expect(readScopes({ scope: "openid  profile\tread:documents " }, ["scope"])).toEqual([
      "openid",
      "profile",
      "read:documents",
    ]);
    expect(readScopes({ roles: ["Tools.Admin"] }, ["roles"])).toEqual(["Tools.Admin"]);
  });

  it("unions claims in order without duplicates", () => {
    const claims = { scope: "openid read:documents", permissions: ["read:documents", "write:documents"] };
    expect(readScopes(claims, ["scope", "permissions"])).toEqual([
      "openid",
      "read:documents",
      "write:documents",
    ]);
    expect(readScopes(claims, ["permissions", "scope"])).toEqual([
      "read:documents",
      "write:documents",
      "openid",
    ]);
  });

  it("ignores non-string entries, non-string claims and missing claims", () => {
    const claims = { permissions: ["a", 1, null, { b: 1 }, ["c"], "", "d"], scp: 42, roles: { x: "y" } };
    expect(readScopes(claims, ["permissions", "scp", "roles", "missing"])).toEqual(["a", "d"]);
  });

  it("reads namespaced and nested scope claims", () => {
    const claims = { "https://example.com/scopes": ["x"], ext: { scp: "y z" } };
    expect(readScopes(claims, ["https://example.com/scopes", "ext.scp"])).toEqual(["x", "y", "z"]);
  });

  it("always returns distinct, non-empty strings without whitespace from string claims", () => {
    fc.assert(
      fc.property(fc.string(), fc.array(fc.anything()), (scope, permissions) => {
        const scopes = readScopes({ scope, permissions }, ["scope", "permissions"]);
        expect(new Set(scopes).size).toBe(scopes.length);
        for (const s of scopes) {
          expect(typeof s).toBe("string");
          expect(s).not.toBe("");
        }
        for (const s of scope.split(/\s+/).filter(Boolean)) expect(scopes).toContain(s);
      }),
    );
  });
});
