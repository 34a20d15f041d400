import type { Queryable } from "../db/database.js";
import type { TenantRecord } from "../tenancy/tenant.js";
import { schemaNameForKey } from "./names.js";

export type IsolationName = "row_level_security" | "schema_per_tenant" | "prefix";

/**
 * Binds a transaction to a tenant in one round trip. `set_config(name, value, true)` is local to
 * the transaction, like `SET LOCAL`, so it cannot outlive the call or leak to the next user of the
 * connection. Under every strategy `app.tenant_id` is set, so RLS policies hold as defence in depth.
 * `role` is the runtime role to switch to (PGlite, whose one connection is a superuser).
 */
export function enterTenant(isolation: IsolationName, record: TenantRecord, role: string | undefined) {
  const searchPath = isolation === "schema_per_tenant" ? `"${schemaNameForKey(record.key)}"` : null;
  const sql =
    "SELECT set_config('app.tenant_id', $1, true)" +
    (role ? ", set_config('role', $2, true)" : "") +
    (searchPath ? `, set_config('search_path', $${role ? 3 : 2}, true)` : "");
  const params: unknown[] = [record.id];
  if (role) params.push(role);
  if (searchPath) params.push(searchPath);
  return async (tx: Queryable): Promise<void> => {
    await tx.query(sql, params);
  };
}
