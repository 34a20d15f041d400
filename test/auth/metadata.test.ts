import { describe, expect, it } from "vitest";
import { protectedResourceMetadata, resourceMetadataUrl, wwwAuthenticate } from "../../src/auth/metadata.js";
import { parseConfig } from "../../src/config/load.js";

const config = (auth: Record<string, unknown>) =>
  parseConfig({ server: { base_url: "https://mcp.example.com/" }, auth }, "test.toml", {});

describe("protected resource metadata (RFC 9728)", () => {
  it("describes the MCP endpoint and its authorization server", () => {
    const c = config({
      provider: "auth0",
      domain: "acme.us.auth0.com",
      audience: "https://mcp.example.com/mcp",
    });
    expect(protectedResourceMetadata(c, { scopes: ["notes:read", "notes:write", "notes:read"] })).toEqual({
      resource: "https://mcp.example.com/mcp",
      authorization_servers: ["https://acme.us.auth0.com/"],
      scopes_supported: ["notes:read", "notes:write"],
      bearer_methods_supported: ["header"],
      resource_name: "Tenantry MCP server",
    });
  });

  it("replaces Entra {tid} templates with the common authority, once", () => {
    const c = config({ provider: "entra", audience: "api://x" });
    expect(protectedResourceMetadata(c).authorization_servers).toEqual([
      "https://login.microsoftonline.com/common/v2.0",
    ]);
    expect(protectedResourceMetadata(c).scopes_supported).toEqual([]);
  });
});

describe("WWW-Authenticate", () => {
  const c = config({ provider: "dev" });

  it("points at the metadata document", () => {
    expect(resourceMetadataUrl(c)).toBe("https://mcp.example.com/.well-known/oauth-protected-resource/mcp");
    expect(wwwAuthenticate(c, { error: "invalid_token" })).toBe(
      'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", error="invalid_token"',
    );
    expect(wwwAuthenticate(c)).toBe(
      'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"',
    );
  });

  it("adds scope and description, escaped so they cannot break out of the header", () => {
    const value = wwwAuthenticate(c, {
      error: "insufficient_scope",
      scope: "notes:write",
      description: 'say "hi"\\ \r\nSet-Cookie: x=1 ✓',
    });
    expect(value).toBe(
      'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", ' +
        'error="insufficient_scope", error_description="say \\"hi\\"\\\\ ??Set-Cookie: x=1 ?", scope="notes:write"',
    );
    expect(value).not.toMatch(/[\r\n]/);
  });
});
