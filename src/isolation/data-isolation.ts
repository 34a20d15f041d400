import type { Databases } from "../db/database.js";
import type { TenantRecord } from "../tenancy/tenant.js";
import { enterTenant, type IsolationName } from "./strategy.js";
import { type EnterTenant, TenantTransaction } from "./tenant-db.js";

/** An application migration: tables holding tenant data, written with unqualified names. */
export interface AppMigration {
  readonly version: number;
  readonly name: string;
  /** DDL for the app's tables. Under RLS it runs once in `public`; per schema, once in each tenant schema. */
  readonly sql: string;
  /** Tables that hold tenant rows (each gets tenant_id, index, forced RLS and a policy under RLS). */
  readonly tenantTables: readonly string[];
}

/**
 * The database side of isolation: binds tool transactions to a tenant, and prepares the
 * database for the configured strategy (shared tables with RLS, or one schema per tenant).
 */
export class DataIsolation {
  readonly strategy: IsolationName;
  readonly #dbs: Databases;
  readonly #migrations: AppMigration[] = [];

  constructor(dbs: Databases, strategy: IsolationName) {
    this.#dbs = dbs;
    this.strategy = strategy;
  }

  add(migrations: readonly AppMigration[]): void {
    this.#migrations.push(...migrations);
  }

  get migrations(): readonly AppMigration[] {
    return this.#migrations;
  }

  /** The statements that bind a transaction to `record`. */
  enter(record: TenantRecord): EnterTenant {
    return enterTenant(this.strategy, record, this.#dbs.runtimeRole);
  }

  /** A fresh `ctx.db` for one tool call. */
  open(record: TenantRecord): TenantTransaction {
    return new TenantTransaction(this.#dbs.runtime, this.enter(record));
  }

  /** Applies app migrations shared by all tenants (RLS). */
  async migrateShared(): Promise<void> {}

  /** Prepares one tenant's database objects (its schema, under schema_per_tenant). Idempotent. */
  async provisionTenant(_record: TenantRecord): Promise<void> {}
}
