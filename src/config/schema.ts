import { z } from "zod";

/**
 * The schema of `tenantry.toml`. Every table is strict: an unknown key is an error naming the key
 * and the file, because a typo (say `enabeld = false`) must never silently weaken security.
 */
const port = z.number().int().min(0).max(65535);
const positiveInt = z.number().int().positive();
const stringOrList = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

export const PROVIDERS = ["auth0", "entra", "cognito", "okta", "oidc", "dev"] as const;
export const ISOLATIONS = ["row_level_security", "schema_per_tenant", "prefix"] as const;
export const JWT_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
] as const;

export const serverSchema = z.strictObject({
  host: z.string().min(1).default("127.0.0.1"),
  port: port.default(8080),
  base_url: z.url().optional(),
  sessions: z.enum(["stateless", "stateful"]).default("stateless"),
  max_body_bytes: positiveInt.max(64 * 1024 * 1024).default(1_048_576),
  /**
   * The longest a client may take to send a whole request, headers and body: past it the server
   * answers 408 and closes the connection (a slow or stalled sender holds a socket for no longer).
   * Responses are not bound by it (a tool call, an SSE stream).
   */
  request_timeout_ms: positiveInt.max(3_600_000).default(30_000),
  /** Origins allowed to call /mcp from a browser (DNS-rebinding guard). Requests without Origin pass. */
  allowed_origins: z.array(z.string().min(1)).default([]),
  /** Most stateful sessions kept at once (oldest evicted). */
  max_sessions: positiveInt.default(10_000),
  /** Most of them one tenant may hold (past it, its own oldest is evicted). Default: half of max_sessions. */
  max_sessions_per_tenant: positiveInt.optional(),
  session_idle_timeout_s: positiveInt.default(1800),
  /**
   * The longest a tool call may run. Past it the call fails with `tool_timeout`: its signal is
   * aborted, its transaction rolled back and its connection freed, whatever the tool still awaits.
   */
  tool_timeout_ms: positiveInt.max(3_600_000).default(60_000),
  /**
   * When set, `GET /metrics` answers only `Authorization: Bearer <metrics_token>`: its per-tenant
   * counters name every active tenant. Unset, it is open (keep it off the public network).
   */
  metrics_token: z.string().min(16, "metrics_token must be at least 16 characters").optional(),
});

export const multiTenantSchema = z.strictObject({
  enabled: z.boolean().default(true),
  tenant_claim: z.string().min(1).optional(),
  tenant_name_claim: z.string().min(1).optional(),
  isolation: z.enum(ISOLATIONS).default("row_level_security"),
  /** Requests per minute; at most what the registry's per-tenant column holds (2³¹ − 1). */
  default_rate_limit: positiveInt.max(2_147_483_647).default(100),
  admin_scope: z.string().min(1).default("admin:global"),
  /** How long a registry entry is trusted in process before it is read again. */
  registry_cache_ttl_ms: positiveInt.max(60_000).default(1000),
});

export const authSchema = z.strictObject({
  enabled: z.boolean().default(true),
  provider: z.enum(PROVIDERS).default("dev"),
  domain: z.string().min(1).optional(),
  issuer: stringOrList.optional(),
  audience: stringOrList.optional(),
  jwks_uri: z.url().optional(),
  client_id: z.string().min(1).optional(),
  region: z.string().min(1).optional(),
  user_pool_id: z.string().min(1).optional(),
  algorithms: z.array(z.enum(JWT_ALGORITHMS)).min(1).optional(),
  clock_tolerance_s: z.number().int().min(0).max(300).default(30),
  scope_claims: z.array(z.string().min(1)).optional(),
  user_claim: z.string().min(1).optional(),
  /** Seconds between JWKS refetches caused by an unknown `kid`. */
  jwks_cooldown_s: z.number().int().min(0).max(3600).default(30),
  jwks_cache_max_age_s: positiveInt.max(86_400).default(600),
  /** Most verified tokens cached in process (keyed by hash). 0 disables the cache. */
  token_cache_size: z.number().int().min(0).max(1_000_000).default(10_000),
  max_token_bytes: positiveInt.max(65_536).default(8192),
  multi_tenant: multiTenantSchema.default(() => multiTenantSchema.parse({})),
});

export const databaseSchema = z.strictObject({
  url: z.string().min(1).optional(),
  admin_url: z.string().min(1).optional(),
  data_dir: z.string().min(1).default(".tenantry/data"),
  pool_size: positiveInt.max(1000).default(10),
  /**
   * PostgreSQL's statement_timeout. Also the client-side deadline's base: a connection that waits
   * this long plus a margin without an answer is closed and its statements fail with
   * `backend_unavailable` (see `clientDeadlineMs`).
   */
  statement_timeout_ms: positiveInt.default(30_000),
  /**
   * Tool statements each runtime connection keeps prepared (least recently used evicted), under
   * row_level_security and `transaction: "statement"`; 0 parses and plans every statement anew.
   */
  statement_cache_size: z.number().int().min(0).max(10_000).default(100),
  /**
   * Most runtime connections one tenant's tool calls hold at once; absent means half the pool
   * (rounded up), 0 no cap. A tenant over its share waits its turn, up to 5 s.
   */
  max_connections_per_tenant: z.number().int().min(0).max(1000).optional(),
  /** PostgreSQL ends a tool transaction left idle this long (its connection is freed). */
  idle_in_transaction_timeout_ms: positiveInt.default(60_000),
});

export const storageSchema = z.strictObject({
  backend: z.enum(["fs", "s3"]).default("fs"),
  root: z.string().min(1).default(".tenantry/objects"),
  bucket: z.string().min(1).optional(),
  region: z.string().min(1).optional(),
  endpoint: z.url().optional(),
  force_path_style: z.boolean().default(false),
  access_key_id: z.string().min(1).optional(),
  secret_access_key: z.string().min(1).optional(),
  max_object_bytes: positiveInt.default(10 * 1024 * 1024),
  /** s3: the longest one S3 request may take (connecting at most 3 s of it); then it fails. */
  request_timeout_ms: positiveInt.max(600_000).default(30_000),
});

export const rateLimitSchema = z.strictObject({
  backend: z.enum(["memory", "redis"]).default("memory"),
  redis_url: z.string().min(1).default("redis://127.0.0.1:6379"),
  on_backend_error: z.enum(["deny", "local"]).default("deny"),
  /** Extra requests allowed at once on top of the steady rate (as a fraction of the per-minute limit when < 1). */
  /**
   * At most 10,000,000: the limiter keeps `(limit + burst) × interval` exact, which bounds it (for
   * a tenant at 1/min, near 1.9e7); a larger burst would make every check of such a tenant fail.
   */
  burst: z.number().min(0).max(10_000_000).default(0),
  key_prefix: z.string().min(1).default("tenantry:rl"),
  /** Most requests one tenant may have in flight on one replica (noisy-neighbour guard); 0 = no cap. */
  max_in_flight_per_tenant: z.number().int().min(0).default(64),
  /** Most tenants whose limiter state is kept in memory (idle ones are evicted first). */
  max_tracked_tenants: positiveInt.default(100_000),
});

export const auditSchema = z.strictObject({
  sink: z.enum(["database", "jsonl", "both", "none"]).default("database"),
  path: z.string().min(1).default(".tenantry/audit.jsonl"),
  queue_size: positiveInt.default(10_000),
  batch_size: positiveInt.max(10_000).default(500),
  flush_interval_ms: positiveInt.default(200),
});

export const lifecycleSchema = z.strictObject({
  retention_days: z.number().min(0).default(30),
  archive_dir: z.string().min(1).default(".tenantry/archive"),
  purge_interval_s: positiveInt.default(3600),
  impersonation_ttl_s: positiveInt.max(86_400).default(900),
});

// Defaults are factories: a shared default object would let one config's nested arrays leak into another.
export const configSchema = z.strictObject({
  server: serverSchema.default(() => serverSchema.parse({})),
  auth: authSchema.default(() => authSchema.parse({})),
  database: databaseSchema.default(() => databaseSchema.parse({})),
  storage: storageSchema.default(() => storageSchema.parse({})),
  rate_limit: rateLimitSchema.default(() => rateLimitSchema.parse({})),
  audit: auditSchema.default(() => auditSchema.parse({})),
  lifecycle: lifecycleSchema.default(() => lifecycleSchema.parse({})),
});

/** A parsed `tenantry.toml` before provider defaults are resolved. */
export type RawConfig = z.infer<typeof configSchema>;
