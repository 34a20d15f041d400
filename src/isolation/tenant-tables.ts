import type { Queryable } from "../db/database.js";
import { TenantryError } from "../errors.js";
import type { TenantRecord } from "../tenancy/tenant.js";
import type { DataIsolation } from "./data-isolation.js";
import { quoteIdent, schemaNameForKey } from "./names.js";
import { usesSchemas } from "./strategy.js";

/** A table of tenant rows, resolved in the catalog. */
export interface TableRef {
  readonly oid: number;
  readonly schema: string;
  readonly name: string;
  /** `"schema"."table"`, quoted. */
  readonly qualified: string;
}

/**
 * Tables holding the tenant's rows, parents before children (foreign keys). schema_per_tenant:
 * every table of its schema. row_level_security (and prefix): the app's tenant tables in
 * `public`, each of which must have `tenant_id`.
 */
export async function tenantTables(
  tx: Queryable,
  isolation: Pick<DataIsolation, "strategy" | "migrations">,
  record: Pick<TenantRecord, "key">,
): Promise<TableRef[]> {
  let rows: { oid: number; schema: string; name: string }[];
  if (usesSchemas(isolation.strategy)) {
    rows = (
      await tx.query<{ oid: number; schema: string; name: string }>(
        `SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
          ORDER BY c.relname`,
        [schemaNameForKey(record.key)],
      )
    ).rows;
  } else {
    const names = [...new Set(isolation.migrations.flatMap((m) => m.tenantTables))];
    rows = (
      await tx.query<{ oid: number; schema: string; name: string }>(
        `SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relname = ANY($1::text[]) AND c.relkind IN ('r', 'p')
          ORDER BY c.relname`,
        [names],
      )
    ).rows;
    for (const r of rows) {
      const has = await tx.query(
        "SELECT 1 FROM pg_attribute WHERE attrelid = $1::oid AND attname = 'tenant_id' AND NOT attisdropped",
        [r.oid],
      );
      if (has.rowCount === 0) {
        throw new TenantryError("unsafe_schema", `tenant table ${r.name} has no tenant_id column`);
      }
    }
  }
  const refs = rows.map((r) => ({
    oid: Number(r.oid),
    schema: r.schema,
    name: r.name,
    qualified: `${quoteIdent(r.schema)}.${quoteIdent(r.name)}`,
  }));
  if (refs.length < 2) return refs;
  const fks = await tx.query<{ child: number; parent: number }>(
    `SELECT conrelid::int AS child, confrelid::int AS parent FROM pg_constraint
      WHERE contype = 'f' AND conrelid = ANY($1::oid[]) AND confrelid = ANY($1::oid[]) AND conrelid <> confrelid`,
    [refs.map((r) => r.oid)],
  );
  return parentsFirst(
    refs,
    fks.rows.map((f) => [Number(f.child), Number(f.parent)] as const),
  );
}

/** Columns that can be inserted into (generated columns excluded), in table order. */
export async function insertableColumns(tx: Queryable, table: TableRef): Promise<string[]> {
  const r = await tx.query<{ attname: string }>(
    `SELECT attname FROM pg_attribute
      WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
      ORDER BY attnum`,
    [table.oid],
  );
  return r.rows.map((c) => c.attname);
}

/** Orders tables so that every referenced table comes before the tables referencing it. */
function parentsFirst(tables: TableRef[], edges: readonly (readonly [number, number])[]): TableRef[] {
  const out: TableRef[] = [];
  const state = new Map<number, "visiting" | "done">();
  const byOid = new Map(tables.map((t) => [t.oid, t]));
  const visit = (t: TableRef) => {
    if (state.get(t.oid)) return; // done, or a cycle: keep the order we have
    state.set(t.oid, "visiting");
    for (const [child, parent] of edges) {
      if (child === t.oid) {
        const p = byOid.get(parent);
        if (p) visit(p);
      }
    }
    state.set(t.oid, "done");
    out.push(t);
  };
  for (const t of tables) visit(t);
  return out;
}
