import { TenantryError } from "../errors.js";
import type { RawConfig } from "./schema.js";

export type Provider = RawConfig["auth"]["provider"];

/** Auth settings with every provider default filled in; what `auth/` consumes. */
export interface ResolvedAuth {
  enabled: boolean;
  provider: Provider;
  /** Exact issuers, or templates containing `{tid}` (entra). */
  issuers: string[];
  /** Accepted audiences; empty only for cognito, which checks `client_id` instead. */
  audiences: string[];
  jwksUri: string | undefined;
  /** Discover `jwks_uri` from `<issuer>/.well-known/openid-configuration` when not given. */
  discovery: boolean;
  clientId: string | undefined;
  algorithms: string[];
  clockToleranceSeconds: number;
  scopeClaims: string[];
  userClaim: string;
  tenantClaim: string;
  tenantNameClaim: string | undefined;
  multiTenant: boolean;
  adminScope: string;
  jwksCooldownSeconds: number;
  jwksCacheMaxAgeSeconds: number;
  tokenCacheSize: number;
  maxTokenBytes: number;
}

export interface TenantryConfig extends RawConfig {
  /** The file the config came from, if any (for messages). */
  source: string | undefined;
  /** `server.base_url`, defaulted from host and port, without a trailing slash. */
  baseUrl: string;
  /** The MCP endpoint's canonical URL: the protected resource (RFC 9728 / RFC 8707). */
  resourceUrl: string;
  resolvedAuth: ResolvedAuth;
}

const ENTRA_ISSUERS = ["https://login.microsoftonline.com/{tid}/v2.0", "https://sts.windows.net/{tid}/"];

function list(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

function need(source: string | undefined, key: string, why: string): never {
  throw new TenantryError("config_invalid", `${source ?? "config"}: ${key}: required ${why}`);
}

/** Fills provider profiles' defaults in and checks what only makes sense across keys. */
export function resolveConfig(raw: RawConfig, source?: string): TenantryConfig {
  const auth = raw.auth;
  const mt = auth.multi_tenant;
  const bind = raw.server.host;
  // A wildcard bind address is not a URL anyone can reach; an IPv6 literal needs brackets in a URL.
  const host = bind === "0.0.0.0" || bind === "::" ? "localhost" : bind.includes(":") ? `[${bind}]` : bind;
  const baseUrl = (raw.server.base_url ?? `http://${host}:${raw.server.port}`).replace(/\/+$/, "");
  const resourceUrl = `${baseUrl}/mcp`;

  let issuers = list(auth.issuer);
  let audiences = list(auth.audience);
  let jwksUri = auth.jwks_uri;
  let discovery = false;
  let tenantClaim = mt.tenant_claim;
  let tenantNameClaim = mt.tenant_name_claim;
  let scopeClaims = auth.scope_claims;
  let userClaim = auth.user_claim ?? "sub";
  let algorithms: string[] = auth.algorithms ?? ["RS256"];

  switch (auth.provider) {
    case "auth0": {
      if (issuers.length === 0) {
        if (!auth.domain) need(source, "auth.domain", "for provider auth0 (or set auth.issuer)");
        issuers = [`https://${auth.domain}/`];
      }
      jwksUri ??= `${issuers[0]!.replace(/\/+$/, "")}/.well-known/jwks.json`;
      tenantClaim ??= "org_id";
      tenantNameClaim ??= "org_name";
      scopeClaims ??= ["scope", "permissions"];
      break;
    }
    case "entra": {
      if (issuers.length === 0) issuers = [...ENTRA_ISSUERS];
      jwksUri ??= "https://login.microsoftonline.com/common/discovery/v2.0/keys";
      tenantClaim ??= "tid";
      scopeClaims ??= ["scp", "roles"];
      userClaim = auth.user_claim ?? "oid";
      break;
    }
    case "cognito": {
      if (issuers.length === 0) {
        if (!auth.region || !auth.user_pool_id)
          need(source, "auth.region and auth.user_pool_id", "for provider cognito (or set auth.issuer)");
        issuers = [`https://cognito-idp.${auth.region}.amazonaws.com/${auth.user_pool_id}`];
      }
      if (!auth.client_id)
        need(source, "auth.client_id", "for provider cognito (access tokens carry client_id)");
      jwksUri ??= `${issuers[0]!.replace(/\/+$/, "")}/.well-known/jwks.json`;
      tenantClaim ??= "custom:tenant_id";
      tenantNameClaim ??= "custom:tenant_name";
      scopeClaims ??= ["scope"];
      break;
    }
    case "okta": {
      if (issuers.length === 0) {
        if (!auth.domain) need(source, "auth.domain", "for provider okta (or set auth.issuer)");
        issuers = [`https://${auth.domain}/oauth2/default`];
      }
      discovery = jwksUri === undefined;
      tenantClaim ??= "tenant_id";
      scopeClaims ??= ["scp", "scope"];
      break;
    }
    case "oidc": {
      if (issuers.length === 0) need(source, "auth.issuer", "for provider oidc");
      discovery = jwksUri === undefined;
      tenantClaim ??= "tenant_id";
      scopeClaims ??= ["scope", "scp", "permissions", "roles"];
      break;
    }
    case "dev": {
      if (issuers.length === 0) issuers = [`${baseUrl}/dev-issuer`];
      if (audiences.length === 0) audiences = [baseUrl, resourceUrl];
      algorithms = auth.algorithms ?? ["ES256"];
      tenantClaim ??= "org_id";
      tenantNameClaim ??= "org_name";
      scopeClaims ??= ["scope", "permissions"];
      break;
    }
  }
  if (audiences.length === 0 && auth.provider !== "cognito" && auth.enabled) {
    need(source, "auth.audience", `for provider ${auth.provider} (tokens must be issued for this server)`);
  }
  if (auth.provider === "entra" && issuers.some((i) => !i.includes("{tid}")) && mt.enabled) {
    // A fixed issuer is allowed (single-tenant app), but then every token names the same tid.
  }

  return {
    ...raw,
    source,
    baseUrl,
    resourceUrl,
    resolvedAuth: {
      enabled: auth.enabled,
      provider: auth.provider,
      issuers,
      audiences,
      jwksUri,
      discovery,
      clientId: auth.client_id,
      algorithms,
      clockToleranceSeconds: auth.clock_tolerance_s,
      scopeClaims,
      userClaim,
      tenantClaim,
      tenantNameClaim,
      multiTenant: mt.enabled,
      adminScope: mt.admin_scope,
      jwksCooldownSeconds: auth.jwks_cooldown_s,
      jwksCacheMaxAgeSeconds: auth.jwks_cache_max_age_s,
      tokenCacheSize: auth.token_cache_size,
      maxTokenBytes: auth.max_token_bytes,
    },
  };
}
