import type { AuditEvent, AuditSink } from "../audit/audit-event.js";
import { TenantryError } from "../errors.js";

/** Who asks for an admin action: `admin:<user id>` for a global admin, or `cli` / `system`. */
export interface Actor {
  readonly id: string;
  readonly requestId?: string;
  /** Set when the actor is a global admin's token (impersonation grants are bound to it). */
  readonly admin?: { readonly adminId: string; readonly issuer: string };
}

/** The actor of scheduled jobs (the periodic purge). */
export const SYSTEM_ACTOR: Actor = Object.freeze({ id: "system" });

export interface AdminEventInput {
  actor: Actor;
  action: string;
  tenantId: string | null;
  details: Record<string, unknown> | null;
  /**
   * `ok` (default) for an action about to take effect. `error` records that an action already
   * written as `ok` did not take effect after all (another operation changed the tenant first).
   */
  outcome?: "ok" | "error";
  errorCode?: string;
}

/**
 * Writes an admin action to the audit log, synchronously, before the action takes effect. If the
 * write fails the caller must not act: this throws `audit_write_failed`, naming the action.
 */
export async function writeAdminEvent(
  sink: AuditSink,
  replica: string,
  input: AdminEventInput,
): Promise<void> {
  const event: AuditEvent = {
    at: new Date().toISOString(),
    kind: "admin",
    tenantId: input.tenantId,
    userId: input.actor.id,
    impersonatedBy: null,
    action: input.action,
    tool: null,
    outcome: input.outcome ?? "ok",
    errorCode: input.errorCode ?? null,
    latencyMs: null,
    requestId: input.actor.requestId ?? null,
    replica,
    details: input.details,
  };
  try {
    await sink.write(event);
  } catch (error) {
    throw new TenantryError(
      "audit_write_failed",
      `${input.action} was not performed: the audit log is unavailable`,
      { cause: error },
    );
  }
}
