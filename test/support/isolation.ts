import { parseConfig } from "../../src/config/load.js";
import { ensurePgliteRuntimeRole, runCoreMigrations } from "../../src/db/core-migrations.js";
import type { Databases } from "../../src/db/database.js";
import { openDatabases } from "../../src/db/open.js";
import { DataIsolation } from "../../src/isolation/data-isolation.js";
import type { IsolationName } from "../../src/isolation/strategy.js";
import type { TenantRecord } from "../../src/tenancy/tenant.js";
import { demoMigrations } from "../../src/tools/demo/index.js";
import type { TestDatabase } from "./postgres.js";
import { record } from "./records.js";

export interface IsolationSetup {
  dbs: Databases;
  isolation: DataIsolation;
  /** `org_T0` (key `k0`), `org_T1` (`k1`), … provisioned with the demo tables. */
  tenants: TenantRecord[];
  close(): Promise<void>;
}

/**
 * Data isolation as the server sets it up, over `db` (PostgreSQL) or in-memory PGlite: core
 * migrations, the demo tables, `tenants` tenants provisioned (default 2), the safety check passed.
 */
export async function setupIsolation(
  strategy: IsolationName,
  db: TestDatabase | undefined,
  options: { tenants?: number; poolSize?: number } = {},
): Promise<IsolationSetup> {
  const config = parseConfig(
    db ? { database: { url: db.runtimeUrl, admin_url: db.adminUrl, pool_size: options.poolSize ?? 10 } } : {},
    "test",
    {},
  );
  const dbs = await openDatabases(config, { memory: true });
  if (dbs.runtimeRole) await ensurePgliteRuntimeRole(dbs.admin, dbs.runtimeRole);
  await runCoreMigrations(dbs.admin, dbs.runtimeRoleName);
  const isolation = new DataIsolation(dbs, strategy);
  isolation.add(demoMigrations);
  await isolation.migrateShared();
  const tenants = Array.from({ length: options.tenants ?? 2 }, (_, i) => record(`org_T${i}`, `k${i}`));
  for (const t of tenants) await isolation.provisionTenant(t);
  await isolation.checkSafety();
  return { dbs, isolation, tenants, close: () => dbs.close() };
}
