import { ensurePgliteRuntimeRole, runCoreMigrations } from "../db/core-migrations.js";
import type { Databases } from "../db/database.js";
import { ConnectionShare } from "../limits/connection-share.js";
import type { TenantRecord } from "../tenancy/tenant.js";
import {
  type AppMigration,
  migrateSharedTables,
  migrateTenantSchema,
  sharedTenantTables,
  validateMigrations,
} from "./migrations.js";
import { assertSafe, inspectDatabase, runtimeRoleOf, type SafetyCheck } from "./safety.js";
import { enterTenant, type IsolationName, usesSchemas } from "./strategy.js";
import { type EnterTenant, type TakeSlot, TenantStatements, TenantTransaction } from "./tenant-db.js";

export type { AppMigration } from "./migrations.js";

/** One tenant's outcome in {@link DataIsolation.migrateAll}. */
export interface TenantMigrationOutcome {
  readonly id: string;
  readonly ok: boolean;
  /** Versions applied to this tenant's schema (schema_per_tenant). */
  readonly applied?: readonly number[];
  readonly error?: string;
}

/** What `tenantry migrate` did. */
export interface MigrateAllResult {
  /** Core (Tenantry's own) migrations applied. */
  readonly core: number[];
  /** App migrations applied to the shared tables (row_level_security, prefix). */
  readonly shared: number[];
  /** Every tenant schema upgraded, or not (schema_per_tenant; empty otherwise). */
  readonly tenants: TenantMigrationOutcome[];
}

/**
 * The database side of isolation: binds tool transactions to a tenant, and prepares the database
 * for the configured strategy (shared tables with forced RLS, or one schema per tenant, itself
 * with forced RLS as defence in depth). Every DDL runs on the admin (owner) connection; tool
 * queries run on the runtime connection, as a role that owns nothing and cannot bypass RLS.
 *
 * @example
 * const isolation = new DataIsolation(dbs, "row_level_security");
 * isolation.add(demoMigrations);
 * await isolation.migrateShared();
 * await isolation.checkSafety();       // throws unsafe_database_role / unsafe_schema
 * const db = isolation.open(record);   // ctx.db for one tool call
 */
export class DataIsolation {
  readonly strategy: IsolationName;
  /** Each tenant's share of the runtime pool (PostgreSQL, unless the cap is off). */
  readonly share: ConnectionShare | undefined;
  readonly #dbs: Databases;
  #migrations: AppMigration[] = [];
  /** Bindings per registry record: records are immutable, a change makes a new one. */
  readonly #entered = new WeakMap<TenantRecord, EnterTenant>();

  /**
   * `share`: the most runtime connections one tenant may hold at once and how long a call over it
   * waits (PostgreSQL only: PGlite has one connection). Absent or `max: 0`: no cap.
   */
  constructor(
    dbs: Databases,
    strategy: IsolationName,
    share?: { readonly max: number; readonly waitMs: number },
  ) {
    this.#dbs = dbs;
    this.strategy = strategy;
    this.share =
      share && share.max > 0 && dbs.runtime.kind === "postgres"
        ? new ConnectionShare(share.max, share.waitMs)
        : undefined;
  }

  /** Registers app migrations. Throws `invalid_argument` on a duplicate version or a bad table name. */
  add(migrations: readonly AppMigration[]): void {
    this.#migrations = validateMigrations([...this.#migrations, ...migrations]);
  }

  get migrations(): readonly AppMigration[] {
    return this.#migrations;
  }

  /** The statements that bind a transaction to `record` (made once per registry record). */
  enter(record: TenantRecord): EnterTenant {
    let enter = this.#entered.get(record);
    if (enter === undefined) {
      enter = enterTenant(this.strategy, record, this.#dbs.runtimeRole);
      this.#entered.set(record, enter);
    }
    return enter;
  }

  /** A fresh `ctx.db` for one tool call: one transaction for the call. */
  open(record: TenantRecord): TenantTransaction {
    return new TenantTransaction(this.#dbs.runtime, this.enter(record), this.#takeSlot(record));
  }

  /** A fresh `ctx.db` for one tool call declared `transaction: "statement"`: one transaction per statement. */
  openStatements(record: TenantRecord): TenantStatements {
    return new TenantStatements(this.#dbs.runtime, this.enter(record), this.#takeSlot(record));
  }

  #takeSlot(record: TenantRecord): TakeSlot | undefined {
    const share = this.share;
    return share && (() => share.acquire(record.key));
  }

  /** The role tool queries run as. */
  runtimeRole(): Promise<string> {
    return runtimeRoleOf(this.#dbs);
  }

  /** The catalog inspection behind {@link checkSafety} and `tenantry doctor`. */
  async inspect(): Promise<SafetyCheck[]> {
    const tenantTables = usesSchemas(this.strategy) ? [] : sharedTenantTables(this.#migrations);
    return inspectDatabase(this.#dbs.admin, await this.runtimeRole(), { tenantTables });
  }

  /**
   * Refuses to run when the runtime role could bypass RLS (superuser, BYPASSRLS, member of such a
   * role, owner of a tenant table) or a tenant table lacks forced RLS with a policy. Throws
   * `unsafe_database_role` or `unsafe_schema`, listing every failed check.
   */
  async checkSafety(): Promise<void> {
    assertSafe(await this.inspect());
  }

  /**
   * Applies pending app migrations to the shared tables (row_level_security and prefix). Under
   * schema_per_tenant there are none: tenant schemas are migrated by {@link provisionTenant} and
   * {@link migrateAll}. Returns the versions applied.
   */
  async migrateShared(): Promise<number[]> {
    if (usesSchemas(this.strategy)) return [];
    return migrateSharedTables(this.#dbs.admin, this.#migrations, await this.runtimeRole());
  }

  /**
   * Prepares one tenant's database objects. Under schema_per_tenant: its schema, migrated and
   * secured. Nothing to do for shared tables. Idempotent (provisioning resumes after a crash).
   */
  async provisionTenant(record: TenantRecord): Promise<number[]> {
    if (!usesSchemas(this.strategy)) return [];
    return migrateTenantSchema(this.#dbs.admin, record, this.#migrations, await this.runtimeRole());
  }

  /**
   * `tenantry migrate`: core migrations, shared app migrations, then, under schema_per_tenant, every
   * tenant's schema (those not deprovisioned), each in its own transaction; a tenant whose upgrade
   * fails is reported and the others go on. Also re-grants the runtime role exactly what it needs.
   */
  async migrateAll(): Promise<MigrateAllResult> {
    const dbs = this.#dbs;
    if (dbs.runtimeRole) await ensurePgliteRuntimeRole(dbs.admin, dbs.runtimeRole);
    const core = await runCoreMigrations(dbs.admin, dbs.runtimeRoleName);
    const runtimeRole = await this.runtimeRole();
    if (!usesSchemas(this.strategy)) {
      const shared = await migrateSharedTables(dbs.admin, this.#migrations, runtimeRole, { reassert: true });
      return { core, shared, tenants: [] };
    }
    const tenants: TenantMigrationOutcome[] = [];
    const rows = await dbs.admin.query<{ id: string; key: string }>(
      "SELECT id, key FROM tenantry_tenants WHERE status <> 'deprovisioned' ORDER BY id",
    );
    for (const { id, key } of rows.rows) {
      try {
        const applied = await migrateTenantSchema(dbs.admin, { id, key }, this.#migrations, runtimeRole);
        tenants.push({ id, ok: true, applied });
      } catch (error) {
        tenants.push({ id, ok: false, error: error instanceof Error ? error.message : String(error) });
      }
    }
    return { core, shared: [], tenants };
  }
}
