import { appendFile, mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import type { Database } from "../db/database.js";
import type { AuditEvent } from "./audit-event.js";
import { BatchingAuditSink, type BatchingOptions } from "./batching-sink.js";

/** JSON line form of an event (snake_case, as documented in README "Audit"). */
export function auditEventToJson(e: AuditEvent): Record<string, unknown> {
  return {
    at: e.at,
    kind: e.kind,
    tenant_id: e.tenantId,
    user_id: e.userId,
    impersonated_by: e.impersonatedBy,
    action: e.action,
    tool: e.tool,
    outcome: e.outcome,
    error_code: e.errorCode,
    latency_ms: e.latencyMs,
    request_id: e.requestId,
    replica: e.replica,
    details: e.details,
  };
}

/** Inserts a batch into `tenantry_audit` in one statement (all or nothing). */
export function databaseWriter(db: Database) {
  return async (events: readonly AuditEvent[]): Promise<void> => {
    if (events.length === 0) return;
    const rows = events.map(auditEventToJson);
    await db.query(
      `INSERT INTO tenantry_audit (at, kind, tenant_id, user_id, impersonated_by, action, tool, outcome,
         error_code, latency_ms, request_id, replica, details)
       SELECT at, kind, tenant_id, user_id, impersonated_by, action, tool, outcome, error_code, latency_ms,
              request_id, replica, details
         FROM json_to_recordset($1::json) AS x(at timestamptz, kind text, tenant_id text, user_id text,
              impersonated_by text, action text, tool text, outcome text, error_code text,
              latency_ms double precision, request_id text, replica text, details jsonb)`,
      [JSON.stringify(rows)],
    );
  };
}

/** Appends a batch to a JSON lines file. */
export function jsonlWriter(path: string) {
  let ready: Promise<unknown> | undefined;
  return async (events: readonly AuditEvent[]): Promise<void> => {
    ready ??= mkdir(dirname(path), { recursive: true });
    await ready;
    await appendFile(path, `${events.map((e) => JSON.stringify(auditEventToJson(e))).join("\n")}\n`, {
      mode: 0o600,
    });
  };
}

/** Builds the sink `[audit] sink` names. */
export function createAuditSink(
  sink: "database" | "jsonl" | "both" | "none",
  deps: { db: Database; path: string; batching: BatchingOptions },
): BatchingAuditSink {
  const writers: ((events: readonly AuditEvent[]) => Promise<void>)[] = [];
  if (sink === "database" || sink === "both") writers.push(databaseWriter(deps.db));
  if (sink === "jsonl" || sink === "both") writers.push(jsonlWriter(deps.path));
  const write = async (events: readonly AuditEvent[]) => {
    for (const w of writers) await w(events);
  };
  return new BatchingAuditSink(write, deps.batching);
}
