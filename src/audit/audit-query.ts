import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import type { Database } from "../db/database.js";
import { TenantryError } from "../errors.js";
import { assertTenantId } from "../tenancy/tenant-id.js";
import type { AuditEvent } from "./audit-event.js";

/** What `tenantry audit` and `GET /admin/api/audit` ask for. */
export interface AuditQuery {
  /** Only this tenant's events. */
  tenant?: string;
  /** Only events at or after this time. */
  since?: Date;
  /** Only this action (`tools/call`, `tenant.suspend`, …). */
  action?: string;
  /** At most this many: the most recent ones matching (default 100, at most 10 000). */
  limit?: number;
}

/** Reads the audit log back. */
export interface AuditReader {
  /** Matching events, oldest first: the `limit` most recent ones, like `tail`. */
  query(q: AuditQuery): Promise<AuditEvent[]>;
}

export const DEFAULT_AUDIT_LIMIT = 100;
export const MAX_AUDIT_LIMIT = 10_000;

/** Validates a query (ids, dates, limits) before any reader sees it. */
export function normaliseAuditQuery(q: AuditQuery): Required<Pick<AuditQuery, "limit">> & AuditQuery {
  if (q.tenant !== undefined) assertTenantId(q.tenant);
  if (q.since !== undefined && Number.isNaN(q.since.getTime())) {
    throw new TenantryError("invalid_argument", "since must be an ISO-8601 date");
  }
  if (q.action !== undefined && (q.action.length === 0 || q.action.length > 200 || q.action.includes("\0"))) {
    throw new TenantryError("invalid_argument", "action must be 1-200 characters, without NUL");
  }
  const limit = q.limit ?? DEFAULT_AUDIT_LIMIT;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_AUDIT_LIMIT) {
    throw new TenantryError("invalid_argument", `limit must be an integer from 1 to ${MAX_AUDIT_LIMIT}`);
  }
  return { ...q, limit };
}

/** Parses `--since` / `?since=`: an ISO-8601 date or date-time. */
export function parseSince(value: string): Date {
  const date = /^\d{4}-\d{2}-\d{2}/.test(value) ? new Date(value) : new Date(Number.NaN);
  if (Number.isNaN(date.getTime())) {
    throw new TenantryError(
      "invalid_argument",
      `since: ${JSON.stringify(value.slice(0, 40))} is not an ISO date`,
    );
  }
  return date;
}

interface AuditRow {
  [key: string]: unknown;
  at: Date | string;
  kind: AuditEvent["kind"];
  tenant_id: string | null;
  user_id: string | null;
  impersonated_by: string | null;
  action: string;
  tool: string | null;
  outcome: AuditEvent["outcome"];
  error_code: string | null;
  latency_ms: number | null;
  request_id: string | null;
  replica: string | null;
  details: Record<string, unknown> | string | null;
}

/** An event from its snake_case form (a `tenantry_audit` row or a JSON line). */
export function auditEventFromJson(row: Record<string, unknown>): AuditEvent {
  const r = row as AuditRow;
  const details =
    typeof r.details === "string" ? (JSON.parse(r.details) as Record<string, unknown>) : r.details;
  return {
    at: r.at instanceof Date ? r.at.toISOString() : new Date(r.at).toISOString(),
    kind: r.kind,
    tenantId: r.tenant_id ?? null,
    userId: r.user_id ?? null,
    impersonatedBy: r.impersonated_by ?? null,
    action: r.action,
    tool: r.tool ?? null,
    outcome: r.outcome,
    errorCode: r.error_code ?? null,
    latencyMs: r.latency_ms === null || r.latency_ms === undefined ? null : Number(r.latency_ms),
    requestId: r.request_id ?? null,
    replica: r.replica ?? "",
    details: details ?? null,
  };
}

/**
 * Reads `tenantry_audit` as the owner role (migration v3 gives it a read-all policy; tenants read
 * only their own rows through the v2 policy).
 */
export function databaseAuditReader(db: Database): AuditReader {
  return {
    async query(input) {
      const q = normaliseAuditQuery(input);
      const r = await db.query<AuditRow>(
        `SELECT at, kind, tenant_id, user_id, impersonated_by, action, tool, outcome, error_code, latency_ms,
                request_id, replica, details
           FROM tenantry_audit
          WHERE ($1::text IS NULL OR tenant_id = $1)
            AND ($2::timestamptz IS NULL OR at >= $2)
            AND ($3::text IS NULL OR action = $3)
          ORDER BY at DESC, id DESC
          LIMIT $4`,
        [q.tenant ?? null, q.since?.toISOString() ?? null, q.action ?? null, q.limit],
      );
      return r.rows.map(auditEventFromJson).reverse();
    },
  };
}

/** Reads a JSON lines audit file, keeping only the last `limit` matches in memory. */
export function jsonlAuditReader(path: string): AuditReader {
  return {
    async query(input) {
      const q = normaliseAuditQuery(input);
      const since = q.since?.getTime();
      const kept: AuditEvent[] = [];
      let stream: ReturnType<typeof createReadStream>;
      try {
        stream = createReadStream(path, { encoding: "utf8" });
        await new Promise<void>((resolve, reject) => {
          stream.once("open", () => resolve());
          stream.once("error", reject);
        });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
        throw error;
      }
      for await (const line of createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY })) {
        if (line.trim() === "") continue;
        let event: AuditEvent;
        try {
          event = auditEventFromJson(JSON.parse(line) as Record<string, unknown>);
        } catch {
          continue; // a torn last line after a crash
        }
        if (q.tenant !== undefined && event.tenantId !== q.tenant) continue;
        if (q.action !== undefined && event.action !== q.action) continue;
        if (since !== undefined && Date.parse(event.at) < since) continue;
        kept.push(event);
        if (kept.length >= 2 * q.limit) kept.splice(0, kept.length - q.limit);
      }
      return kept.slice(-q.limit);
    },
  };
}

/** The reader for `[audit] sink`: the database when it is written there, else the JSON lines file. */
export function createAuditReader(
  sink: "database" | "jsonl" | "both" | "none",
  deps: { db: Database; path: string },
): AuditReader {
  if (sink === "database" || sink === "both") return databaseAuditReader(deps.db);
  if (sink === "jsonl") return jsonlAuditReader(deps.path);
  return {
    async query() {
      throw new TenantryError("invalid_argument", 'the audit log is disabled ([audit] sink = "none")');
    },
  };
}
