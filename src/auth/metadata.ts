import type { TenantryConfig } from "../config/resolve.js";

/**
 * Entra issuers are per directory (`{tid}`); a client discovering where to sign in needs the
 * multi-tenant authority instead.
 */
const ENTRA_COMMON_AUTHORITY = "https://login.microsoftonline.com/common/v2.0";

/** The OAuth 2.0 Protected Resource Metadata document (RFC 9728) for the MCP endpoint. */
export interface ProtectedResourceMetadata {
  resource: string;
  authorization_servers: string[];
  scopes_supported: string[];
  bearer_methods_supported: ["header"];
  resource_name: string;
}

/** The URL of the metadata document, as advertised in `WWW-Authenticate`. */
export function resourceMetadataUrl(config: TenantryConfig): string {
  return `${config.baseUrl}/.well-known/oauth-protected-resource/mcp`;
}

/**
 * Builds the RFC 9728 document served at `/.well-known/oauth-protected-resource[/mcp]`.
 * `scopes` are the scopes clients may request (say, the tools' scopes); none are implied, so the
 * admin scope is never advertised to every client.
 *
 * @example
 * protectedResourceMetadata(config, { scopes: ["notes:read", "notes:write"] });
 */
export function protectedResourceMetadata(
  config: TenantryConfig,
  options: { scopes?: readonly string[] } = {},
): ProtectedResourceMetadata {
  const servers = config.resolvedAuth.issuers.map((i) => (i.includes("{tid}") ? ENTRA_COMMON_AUTHORITY : i));
  return {
    resource: config.resourceUrl,
    authorization_servers: [...new Set(servers)],
    scopes_supported: [...new Set(options.scopes ?? [])],
    bearer_methods_supported: ["header"],
    resource_name: "Tenantry MCP server",
  };
}

/**
 * Makes a value safe inside an HTTP quoted-string: backslash and double quote are escaped, and
 * anything outside printable ASCII (CR/LF above all) is replaced, so that a reason built from
 * token content can neither split the header nor make Node refuse to send it.
 */
function quote(value: string): string {
  return `"${value.replace(/[^\x20-\x7e]/g, "?").replace(/["\\]/g, "\\$&")}"`;
}

export interface WwwAuthenticateOptions {
  /** RFC 6750 error code: `invalid_token`, `insufficient_scope`, `invalid_request`. */
  error?: string;
  /** Space-separated scopes the request needs (with `insufficient_scope`). */
  scope?: string;
  description?: string;
}

/**
 * The `WWW-Authenticate` value for a 401/403 from the MCP endpoint (RFC 6750 §3, RFC 9728 §5.1).
 *
 * @example
 * wwwAuthenticate(config, { error: "invalid_token" });
 * // Bearer resource_metadata="http://localhost:8080/.well-known/oauth-protected-resource/mcp", error="invalid_token"
 */
export function wwwAuthenticate(config: TenantryConfig, options: WwwAuthenticateOptions = {}): string {
  const params = [`resource_metadata=${quote(resourceMetadataUrl(config))}`];
  if (options.error !== undefined) params.push(`error=${quote(options.error)}`);
  if (options.description !== undefined) params.push(`error_description=${quote(options.description)}`);
  if (options.scope !== undefined) params.push(`scope=${quote(options.scope)}`);
  return `Bearer ${params.join(", ")}`;
}
