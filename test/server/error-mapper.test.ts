import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ERROR_CODES, type ErrorCode, TenantryError } from "../../src/errors.js";
import { toHttpError } from "../../src/server/error-mapper.js";

const mapper = {
  wwwAuthenticate: ({ error, scope }: { error: string; scope?: string }) =>
    `Bearer resource_metadata="https://x/.well-known/oauth-protected-resource/mcp", error="${error}"${scope ? `, scope="${scope}"` : ""}`,
};

/** The contract's table (DESIGN.md "Errors before MCP dispatch"): code → status. */
const CONTRACT: Record<string, number> = {
  invalid_token: 401,
  missing_tenant: 403,
  unknown_tenant: 403,
  tenant_suspended: 403,
  trial_expired: 403,
  tenant_deprovisioned: 403,
  insufficient_scope: 403,
  rate_limited: 429,
  payload_too_large: 413,
  unsupported_media_type: 415,
};

describe("error codes", () => {
  it("every code in the public contract maps to its documented status", () => {
    for (const [code, status] of Object.entries(CONTRACT)) {
      expect(code in ERROR_CODES, code).toBe(true);
      const mapped = toHttpError(new TenantryError(code as ErrorCode), mapper);
      expect(mapped.status, code).toBe(status);
      expect(mapped.body.error, code).toBe(code);
    }
  });

  it("every 503 says when to retry: Retry-After 1 unless the error chose its own", () => {
    for (const code of ["service_unavailable", "backend_unavailable"] as const) {
      const mapped = toHttpError(new TenantryError(code, "down"), mapper);
      expect(mapped.status, code).toBe(503);
      expect(mapped.headers["Retry-After"], code).toBe("1");
    }
    const chosen = new TenantryError("service_unavailable", "IdP down", {
      details: { headers: { "Retry-After": "5" } },
    });
    expect(toHttpError(chosen, mapper).headers["Retry-After"]).toBe("5");
    expect(toHttpError(new TenantryError("tenant_suspended"), mapper).headers["Retry-After"]).toBeUndefined();
  });

  it("401 and insufficient_scope carry the WWW-Authenticate challenge; others do not", () => {
    expect(toHttpError(new TenantryError("invalid_token"), mapper).headers["WWW-Authenticate"]).toContain(
      'error="invalid_token"',
    );
    const scoped = toHttpError(
      new TenantryError("insufficient_scope", "x", { details: { scope: "admin:global" } }),
      mapper,
    );
    expect(scoped.headers["WWW-Authenticate"]).toContain('scope="admin:global"');
    expect(
      toHttpError(new TenantryError("tenant_suspended"), mapper).headers["WWW-Authenticate"],
    ).toBeUndefined();
  });

  it("every code is documented in the registry with a description, and none is reused", () => {
    const codes = Object.keys(ERROR_CODES);
    expect(new Set(codes).size).toBe(codes.length);
    for (const [code, text] of Object.entries(ERROR_CODES)) {
      expect(code).toMatch(/^[a-z_]+$/);
      expect(text.length, code).toBeGreaterThan(10);
    }
  });

  it("every code the README documents exists", () => {
    const readme = readFileSync("README.md", "utf8");
    const table = readme.slice(
      readme.indexOf("## HTTP endpoints and errors"),
      readme.indexOf("## Isolation strategies"),
    );
    const documented = [...table.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!).filter((c) => c.includes("_"));
    expect(documented.length).toBeGreaterThan(8);
    for (const code of documented) expect(code in ERROR_CODES, code).toBe(true);
  });

  it("anything that is not a TenantryError is a 500 that says nothing of internals", () => {
    const mapped = toHttpError(new Error("password=hunter2 at db.internal:5432"), mapper);
    expect(mapped.status).toBe(500);
    expect(JSON.stringify(mapped.body)).not.toContain("hunter2");
  });
});
