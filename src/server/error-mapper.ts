import { type ErrorCode, TenantryError } from "../errors.js";

/** The HTTP status for each error code that can reach a client before MCP dispatch. */
const STATUS: Partial<Record<ErrorCode, number>> = {
  invalid_token: 401,
  missing_tenant: 403,
  invalid_tenant_id: 400,
  unknown_tenant: 403,
  tenant_suspended: 403,
  trial_expired: 403,
  tenant_deprovisioned: 403,
  tenant_provisioning: 403,
  insufficient_scope: 403,
  forbidden: 403,
  rate_limited: 429,
  too_many_concurrent: 429,
  payload_too_large: 413,
  unsupported_media_type: 415,
  bad_request: 400,
  invalid_argument: 400,
  invalid_storage_key: 400,
  not_found: 404,
  object_not_found: 404,
  session_not_found: 404,
  method_not_allowed: 405,
  tenant_exists: 409,
  tenant_conflict: 409,
  service_unavailable: 503,
  backend_unavailable: 503,
  audit_write_failed: 503,
};

export interface HttpError {
  status: number;
  headers: Record<string, string>;
  body: { error: ErrorCode; message: string };
}

export interface MapperContext {
  /** Builds the `WWW-Authenticate` header value for 401/403 scope errors. */
  wwwAuthenticate(params: { error: string; scope?: string }): string;
}

/**
 * The one place where domain errors become HTTP: status, JSON body `{error, message}` and the
 * headers the contract promises. Anything that is not a TenantryError is a 500 whose message
 * says nothing about internals.
 */
export function toHttpError(error: unknown, ctx: MapperContext): HttpError {
  if (!(error instanceof TenantryError)) {
    return { status: 500, headers: {}, body: { error: "internal", message: "internal error" } };
  }
  const status = STATUS[error.code] ?? 500;
  const headers: Record<string, string> = {};
  if (error.code === "invalid_token") {
    headers["WWW-Authenticate"] = ctx.wwwAuthenticate({ error: "invalid_token" });
  } else if (error.code === "insufficient_scope") {
    const scope = typeof error.details.scope === "string" ? error.details.scope : undefined;
    headers["WWW-Authenticate"] = ctx.wwwAuthenticate({
      error: "insufficient_scope",
      ...(scope ? { scope } : {}),
    });
  }
  const extra = error.details.headers;
  if (extra && typeof extra === "object") Object.assign(headers, extra as Record<string, string>);
  // A dependency that is down may heal: every 503 says when to try again, also where the error
  // came from code that did not choose (a registry read, the object store, the archive directory).
  if (status === 503 && headers["Retry-After"] === undefined) headers["Retry-After"] = "1";
  const message = status === 500 ? "internal error" : error.message;
  return { status, headers, body: { error: status === 500 ? "internal" : error.code, message } };
}
