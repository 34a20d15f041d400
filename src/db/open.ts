import { join } from "node:path";
import type { TenantryConfig } from "../config/resolve.js";
import { TenantryError } from "../errors.js";
import type { Database, Databases } from "./database.js";
import { PgliteDatabase } from "./pglite.js";
import { PostgresDatabase } from "./postgres.js";

/** The role runtime transactions switch to on embedded PGlite (it has one superuser connection). */
export const PGLITE_RUNTIME_ROLE = "tenantry_runtime";

export function roleFromUrl(url: string): string {
  try {
    const u = new URL(url);
    return decodeURIComponent(u.username) || process.env.PGUSER || process.env.USER || "postgres";
  } catch (error) {
    throw new TenantryError("config_invalid", "database.url: not a valid postgres:// URL", { cause: error });
  }
}

/** Where the embedded database lives inside `database.data_dir`. */
export function pgliteDir(config: TenantryConfig): string {
  return join(config.database.data_dir, "pglite");
}

/**
 * Opens the owner and runtime connections. Embedded PGlite when `database.url` is absent
 * (`memory: true` keeps it in memory, for tests), otherwise two `pg` pools.
 */
export async function openDatabases(
  config: TenantryConfig,
  options: { memory?: boolean } = {},
): Promise<Databases> {
  const { url, admin_url: adminUrl } = config.database;
  if (!url) {
    const db = await PgliteDatabase.open(options.memory ? undefined : pgliteDir(config));
    return {
      admin: db,
      runtime: db,
      runtimeRole: PGLITE_RUNTIME_ROLE,
      runtimeRoleName: PGLITE_RUNTIME_ROLE,
      close: () => db.close(),
    };
  }
  const opts = {
    poolSize: config.database.pool_size,
    statementTimeoutMs: config.database.statement_timeout_ms,
  };
  // Tool transactions run on the runtime pool: there, a transaction left idle is ended.
  const runtime = new PostgresDatabase(url, {
    ...opts,
    idleInTransactionTimeoutMs: config.database.idle_in_transaction_timeout_ms,
    statementCacheSize: config.database.statement_cache_size,
  });
  const admin: Database =
    adminUrl && adminUrl !== url ? new PostgresDatabase(adminUrl, { ...opts, poolSize: 4 }) : runtime;
  return {
    admin,
    runtime,
    runtimeRole: undefined,
    runtimeRoleName: roleFromUrl(url),
    async close() {
      await runtime.close();
      if (admin !== runtime) await admin.close();
    },
  };
}
