import type { Command } from "commander";
import { type AuditQuery, parseSince } from "../audit/audit-query.js";
import { auditEventToJson } from "../audit/sinks.js";
import { assertTenantId } from "../tenancy/tenant-id.js";
import { withAdminAccess } from "./admin-client.js";
import { type ConfigOptions, positiveInt, resolveCliConfig } from "./context.js";
import { print } from "./output.js";

type EventJson = Record<string, unknown>;

/** One event per line: time, tenant, who, what, outcome, latency, request id. */
function line(e: EventJson): string {
  const who = e.impersonated_by ? `${e.user_id} (impersonating)` : (e.user_id ?? "-");
  const what = e.tool ? `${e.action} ${e.tool}` : e.action;
  const outcome = e.error_code ? `${e.outcome}:${e.error_code}` : e.outcome;
  const latency = e.latency_ms === null || e.latency_ms === undefined ? "" : `${e.latency_ms}ms`;
  const details = e.details ? ` ${JSON.stringify(e.details)}` : "";
  return (
    [e.at, e.kind, e.tenant_id ?? "-", who, what, outcome, latency, e.request_id ?? ""].join("  ") + details
  );
}

/** `tenantry audit`: reads the audit log (through the running server when there is one). */
export function registerAudit(program: Command): void {
  program
    .command("audit")
    .description("read the audit log: the most recent events, oldest first")
    .option("--tenant <id>", "only this tenant's events")
    .option("--since <iso>", "only events at or after this ISO-8601 time")
    .option("--action <action>", "only this action (tools/call, tenant.suspend, impersonation.grant, …)")
    .option("--limit <n>", "at most this many (default 100)")
    .option("--config <file>", "tenantry.toml to use")
    .option("--data-dir <dir>", "data directory of `tenantry dev`")
    .option("--json", "print JSON")
    .action(
      async (
        o: ConfigOptions & {
          tenant?: string;
          since?: string;
          action?: string;
          limit?: string;
          json?: boolean;
        },
      ) => {
        const q: AuditQuery = {
          ...(o.tenant !== undefined ? { tenant: assertTenantId(o.tenant) } : {}),
          ...(o.since !== undefined ? { since: parseSince(o.since) } : {}),
          ...(o.action !== undefined ? { action: o.action } : {}),
          ...(o.limit !== undefined ? { limit: positiveInt(o.limit, "--limit") } : {}),
        };
        const config = await resolveCliConfig(o);
        const events = (await withAdminAccess(config, async (a) => {
          if (a.mode === "direct") return (await a.app.adminServices.auditLog.query(q)).map(auditEventToJson);
          const params = new URLSearchParams();
          if (q.tenant) params.set("tenant", q.tenant);
          if (q.since) params.set("since", q.since.toISOString());
          if (q.action) params.set("action", q.action);
          if (q.limit) params.set("limit", String(q.limit));
          const query = params.toString() ? `?${params.toString()}` : "";
          return ((await a.call("GET", `/audit${query}`)) as { events: EventJson[] }).events;
        })) as EventJson[];
        print({ events }, o.json, () => (events.length > 0 ? events.map(line).join("\n") : "no events"));
      },
    );
}
