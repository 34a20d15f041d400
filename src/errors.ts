/**
 * One error type for the whole product. Domain code throws a {@link TenantryError} with a fixed
 * string `code`; it knows nothing of HTTP. `server/error-mapper.ts` is the only place that turns a
 * code into a status, a JSON body and headers. Tests switch on `code`, never on `message`.
 */
export const ERROR_CODES = {
  // authentication (401)
  invalid_token:
    "The bearer token is missing, malformed, expired, badly signed or not issued for this server.",
  // identification and admission (403)
  missing_tenant: "The token is valid but carries no tenant claim.",
  invalid_tenant_id: "A tenant id is not 1-64 characters of [A-Za-z0-9._:-] (other than . and ..).",
  unknown_tenant: "The tenant is not in the registry.",
  tenant_suspended: "The tenant is suspended.",
  trial_expired: "The tenant's trial has expired.",
  tenant_deprovisioned: "The tenant has been deprovisioned.",
  tenant_provisioning: "The tenant is still being provisioned.",
  insufficient_scope: "The token lacks a scope this operation needs.",
  forbidden: "The caller may not perform this operation.",
  // limits
  rate_limited: "The tenant is over its request rate.",
  too_many_concurrent: "The tenant has too many requests in flight.",
  payload_too_large:
    "The request body is larger than server.max_body_bytes, or an object larger than storage.max_object_bytes.",
  unsupported_media_type: "The request body is not application/json.",
  bad_request: "The request is malformed.",
  not_found: "No such resource.",
  method_not_allowed: "The HTTP method is not allowed here.",
  session_not_found: "No such MCP session.",
  service_unavailable: "A dependency the request needs is unavailable.",
  // configuration and operation
  config_invalid: "tenantry.toml is missing, unreadable or invalid.",
  config_exists: "tenantry.toml exists; pass --force to overwrite.",
  tenant_exists: "A tenant with this id already exists.",
  tenant_conflict:
    "The tenant's state does not allow this now: its status, a restore or purge in progress, or a change made meanwhile by another operation.",
  invalid_argument: "An argument is invalid.",
  invalid_storage_key: "A storage key is invalid (.. segment, leading /, backslash, NUL or too long).",
  object_not_found: "No object with this key.",
  unsafe_database_role: "The runtime database role could bypass row-level security.",
  unsafe_schema: "A tenant table lacks forced row-level security with a policy.",
  migration_failed: "A migration failed.",
  backend_unavailable:
    "A backend (database, Redis, object store, the archive directory) is unreachable or failing.",
  tool_timeout: "The tool did not finish within server.tool_timeout_ms.",
  audit_write_failed: "An audit event could not be written; the action was not performed.",
  internal: "Internal error.",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface TenantryErrorOptions {
  cause?: unknown;
  /** Extra facts for the mapper (e.g. retryAfterSeconds, scope); never secrets. */
  details?: Record<string, unknown>;
}

/** The single base error of Tenantry. `code` is stable public API. */
export class TenantryError extends Error {
  override readonly name = "TenantryError";
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message?: string, options: TenantryErrorOptions = {}) {
    super(message ?? ERROR_CODES[code], options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }
}

export function isTenantryError(error: unknown, code?: ErrorCode): error is TenantryError {
  return error instanceof TenantryError && (code === undefined || error.code === code);
}
