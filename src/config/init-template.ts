import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { parse as parseToml } from "smol-toml";
import { TenantryError } from "../errors.js";
import { parseConfig } from "./load.js";
import type { Provider } from "./resolve.js";
import type { ISOLATIONS } from "./schema.js";

export type Isolation = (typeof ISOLATIONS)[number];

/** What `tenantry init` asks for; everything else gets a commented default. */
export interface InitOptions {
  provider: Provider;
  multiTenant: boolean;
  /** Defaults to `row_level_security`. Only written when `multiTenant`. */
  isolation?: Isolation;
  /** Defaults to the provider's usual claim (`org_id`, `tid`, `custom:tenant_id`, `tenant_id`). */
  tenantClaim?: string;
  /** Requests per minute per tenant; defaults to 100. */
  rateLimit?: number;
}

export interface WriteInitOptions {
  /** Overwrite an existing file. */
  force?: boolean;
}

const DEFAULT_TENANT_CLAIM: Record<Provider, string> = {
  auth0: "org_id",
  entra: "tid",
  cognito: "custom:tenant_id",
  okta: "tenant_id",
  oidc: "tenant_id",
  dev: "org_id",
};

const DEFAULT_TENANT_NAME_CLAIM: Partial<Record<Provider, string>> = {
  auth0: "org_name",
  cognito: "custom:tenant_name",
  dev: "org_name",
};

/** A TOML basic string. JSON escapes are TOML escapes, except that TOML also forbids a raw DEL. */
function str(value: string): string {
  return JSON.stringify(value).replace(/\u007f/g, "\\u007F");
}

function authLines(provider: Provider): string[] {
  switch (provider) {
    case "auth0":
      return [
        "# Your Auth0 tenant's domain (or custom domain). The issuer https://<domain>/ and its JWKS",
        "# (https://<domain>/.well-known/jwks.json) are derived from it.",
        'domain = "your-tenant.auth0.com"',
        "# The API identifier of the Auth0 API that represents this server: tokens for other APIs",
        "# are rejected. Change it to your API's identifier.",
        'audience = "https://mcp.example.com"',
      ];
    case "entra":
      return [
        "# Microsoft Entra ID. By default any directory's v2 (login.microsoftonline.com/{tid}/v2.0)",
        "# and v1 (sts.windows.net/{tid}/) issuer is accepted; {tid} must match the token's tid.",
        "# A single-directory app can pin its issuer instead:",
        '# issuer = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0"',
        "# Global admins (admin_scope) are honoured only from an issuer listed exactly, never through",
        "# {tid}: every directory assigns the app's roles itself. To have admins, list your own:",
        '# issuer = ["https://login.microsoftonline.com/{tid}/v2.0", "https://sts.windows.net/{tid}/",',
        '#           "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0"]',
        "# Tokens must be issued for this app: v1 tokens carry the Application ID URI, v2 tokens the",
        "# app's client id. Replace both with your app registration's values.",
        'audience = ["api://00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000"]',
      ];
    case "cognito":
      return [
        "# The Cognito user pool that issues tokens; the issuer",
        "# https://cognito-idp.<region>.amazonaws.com/<user_pool_id> and its JWKS are derived from it.",
        'region = "us-east-1"',
        'user_pool_id = "us-east-1_EXAMPLE"',
        "# Cognito access tokens carry no aud: the app client id is checked instead. Change it to",
        "# the app client that your MCP clients use.",
        'client_id = "your-app-client-id"',
        "# custom:tenant_id decides the tenant: make the attribute read-only for every app client,",
        "# or users can rewrite it (UpdateUserAttributes) and move into another tenant.",
        "# Uncomment to also require an audience (ID tokens, or resource servers that set aud):",
        '# audience = "https://mcp.example.com"',
      ];
    case "okta":
      return [
        "# Your Okta org domain; the issuer https://<domain>/oauth2/default is derived from it and its",
        "# keys are found by OIDC discovery. Set issuer for another authorization server.",
        'domain = "your-org.okta.com"',
        '# issuer = "https://your-org.okta.com/oauth2/ausexample"',
        "# The authorization server's audience: tokens for other resources are rejected.",
        'audience = "api://default"',
      ];
    case "oidc":
      return [
        "# Any OpenID Connect provider: the exact iss of its tokens (a string or a list).",
        'issuer = "https://idp.example.com"',
        "# Keys are found by discovery (<issuer>/.well-known/openid-configuration) unless set here:",
        '# jwks_uri = "https://idp.example.com/.well-known/jwks.json"',
        "# The aud tokens must carry to be accepted by this server; change it to your resource id.",
        'audience = "https://mcp.example.com"',
      ];
    case "dev":
      return [
        "# The built-in development issuer (`tenantry token` mints its tokens). Never use it in",
        "# production: anyone who runs this server can sign tokens.",
        "# The audience defaults to server.base_url, and the issuer to <base_url>/dev-issuer.",
      ];
  }
}

function multiTenantLines(options: InitOptions, rateLimit: number): string[] {
  if (!options.multiTenant) {
    return [
      "[auth.multi_tenant]",
      "# Single-tenant: every caller belongs to this deployment and no tenant claim is required.",
      "# Multi-tenancy is on unless disabled here; `tenantry init --multi-tenant` writes the full table.",
      "enabled = false",
      "# Requests per minute the limiter allows.",
      `default_rate_limit = ${rateLimit}`,
    ];
  }
  const tenantClaim = options.tenantClaim ?? DEFAULT_TENANT_CLAIM[options.provider];
  const nameClaim = DEFAULT_TENANT_NAME_CLAIM[options.provider];
  return [
    "[auth.multi_tenant]",
    "# Each token names its organization; requests without the claim are refused (missing_tenant).",
    "enabled = true",
    "# The claim holding the tenant id, exactly as the IdP issues it (a dotted path reaches nested claims).",
    `tenant_claim = ${str(tenantClaim)}`,
    ...(nameClaim
      ? ["# A display name for logs and the admin API (optional).", `# tenant_name_claim = ${str(nameClaim)}`]
      : []),
    "# How tenants' data is kept apart: row_level_security (shared tables, Postgres policies),",
    "# schema_per_tenant (one schema each) or prefix (per-tenant prefixes in object storage).",
    `isolation = ${str(options.isolation ?? "row_level_security")}`,
    "# Requests per minute per tenant unless the tenant's own limit says otherwise.",
    `default_rate_limit = ${rateLimit}`,
    "# The scope that makes a token a global admin (all tenants, impersonation). Grant it sparingly.",
    'admin_scope = "admin:global"',
  ];
}

/**
 * Renders a commented `tenantry.toml` that validates as written: placeholders would fail (an unset
 * `${VAR}` is an error), so provider values are literal examples with comments saying what to change.
 *
 * @example
 * renderInitConfig({ provider: "auth0", multiTenant: true, isolation: "schema_per_tenant" });
 */
export function renderInitConfig(options: InitOptions): string {
  const rateLimit = options.rateLimit ?? 100;
  if (!Number.isSafeInteger(rateLimit) || rateLimit <= 0) {
    throw new TenantryError(
      "invalid_argument",
      `rate limit must be a positive integer, got ${options.rateLimit}`,
    );
  }
  if (options.tenantClaim !== undefined && options.tenantClaim.trim() === "") {
    throw new TenantryError("invalid_argument", "tenant claim must not be empty");
  }
  const lines = [
    "# tenantry.toml: written by `tenantry init`. Unknown keys are errors, so a typo cannot silently",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: TOML's ${VAR} syntax, not a JS placeholder.
    '# weaken security. Any string value may use ${ENV_VAR}, e.g. url = "${DATABASE_URL}"; an',
    "# unset variable is an error, never an empty string.",
    "",
    "[server]",
    "# Bind address: 127.0.0.1 for local use, 0.0.0.0 behind a load balancer or in a container.",
    'host = "127.0.0.1"',
    "port = 8080",
    "# The URL clients reach this server at: the protected-resource id in OAuth metadata, and the",
    "# default token audience for the dev provider. Change it when deploying.",
    'base_url = "http://localhost:8080"',
    "# stateless scales across replicas; stateful keeps MCP sessions bound to the identity that opened them.",
    'sessions = "stateless"',
    "# Larger request bodies are refused before any parsing (413).",
    "max_body_bytes = 1048576",
    "# A client that takes longer to send a whole request (headers and body) gets 408.",
    "request_timeout_ms = 30000",
    "# A tool call that runs longer fails with tool_timeout; its transaction is rolled back.",
    "tool_timeout_ms = 60000",
    "# /metrics names every active tenant in its counters. Keep it off the public network, or",
    "# require a bearer token for scrapes (16 characters or more):",
    `# metrics_token = "$\{METRICS_TOKEN}"`,
    "",
    "[auth]",
    "# Bearer tokens are verified on every request. Turn off only for local experiments.",
    "enabled = true",
    "# auth0 | entra | cognito | okta | oidc | dev",
    `provider = ${str(options.provider)}`,
    ...authLines(options.provider),
    "# Signature algorithms accepted; never list none or HS* for tokens from a remote IdP.",
    `algorithms = [${str(options.provider === "dev" ? "ES256" : "RS256")}]`,
    "# Seconds of clock skew tolerated on exp and nbf.",
    "clock_tolerance_s = 30",
    "",
    ...multiTenantLines(options, rateLimit),
    "",
    "[database]",
    "# Without url, an embedded PGlite database in data_dir is used: fine for development.",
    "# For production, url connects as the runtime role (not superuser, not BYPASSRLS, not the",
    "# tables' owner) and admin_url as the owner that runs migrations and provisioning:",
    '# url = "postgres://tenantry_app@127.0.0.1:5432/tenantry"',
    '# admin_url = "postgres://tenantry_owner@127.0.0.1:5432/tenantry"',
    'data_dir = ".tenantry/data"',
    "# PostgreSQL only: runtime connections per replica, and how many of them one tenant's tool",
    "# calls may hold at once (default half the pool; 0 = no cap, for a single organization).",
    "# pool_size = 10",
    "# max_connections_per_tenant = 5",
    "# PostgreSQL ends a tool transaction left idle this long, freeing its connection.",
    "# idle_in_transaction_timeout_ms = 60000",
    "# PostgreSQL cancels a statement that runs longer. A connection that waits this long plus a",
    "# margin (a tenth, at least 1 s) without an answer is closed: backend_unavailable.",
    "# statement_timeout_ms = 30000",
    '# Under row_level_security, transaction: "statement" tools\' statements each connection keeps',
    "# prepared (least recently used evicted); 0 parses and plans every statement anew.",
    "# statement_cache_size = 100",
    "",
    "[storage]",
    "# Tenant objects live under a per-tenant prefix. fs keeps them on local disk; s3 for production:",
    'backend = "fs"',
    'root = ".tenantry/objects"',
    '# backend = "s3"',
    '# bucket = "my-tenantry-objects"',
    '# region = "us-east-1"',
    '# endpoint = "http://127.0.0.1:9000"   # S3-compatible stores (MinIO) only',
    "# force_path_style = true",
    "# request_timeout_ms = 30000          # s3: the longest one request may take",
    "",
    "[rate_limit]",
    "# memory limits per replica (N replicas allow N times the rate); redis shares one budget.",
    'backend = "memory"',
    '# backend = "redis"',
    '# redis_url = "redis://127.0.0.1:6379"',
    "# When Redis is unreachable: deny requests, or fall back to a per-replica (local) limiter.",
    'on_backend_error = "deny"',
    "",
    "[audit]",
    "# Every request and admin action is recorded: database | jsonl | both | none.",
    'sink = "database"',
    "# The file written by the jsonl sink.",
    'path = ".tenantry/audit.jsonl"',
    "",
    "[lifecycle]",
    "# Deprovisioned tenants' data is archived, then purged after this many days.",
    "retention_days = 30",
    'archive_dir = ".tenantry/archive"',
    "",
  ];
  return lines.join("\n");
}

/**
 * Writes {@link renderInitConfig}'s output to `path`. Refuses with `config_exists` when the file
 * exists and `force` is not set; the check and the create are one step (`wx`), so no race
 * overwrites a file that appeared in between.
 */
export async function writeInitConfig(
  path: string,
  options: InitOptions,
  { force = false }: WriteInitOptions = {},
): Promise<void> {
  const text = renderInitConfig(options);
  // Defensive: what init writes must load. An empty env proves the template needs no variables.
  parseConfig(parseToml(text), path, {});
  await mkdir(dirname(path), { recursive: true });
  try {
    await writeFile(path, text, { encoding: "utf8", flag: force ? "w" : "wx" });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") {
      throw new TenantryError("config_exists", `${path} exists; pass --force to overwrite`, { cause: error });
    }
    throw error;
  }
}
