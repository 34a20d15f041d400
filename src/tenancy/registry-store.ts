import { NOTIFY_CHANNEL } from "../db/core-migrations.js";
import type { Database, Queryable } from "../db/database.js";
import { TenantryError } from "../errors.js";
import type { NewTenant, TenantRecord, TenantStatus, TenantUpdate } from "./tenant.js";
import { assertTenantId } from "./tenant-id.js";

interface TenantRow {
  [key: string]: unknown;
  id: string;
  key: string;
  name: string;
  status: TenantStatus;
  expires_at: Date | string | null;
  rate_limit: number | null;
  allowed_tools: string[];
  feature_flags: Record<string, boolean | string | number>;
  provisioning_step: string | null;
  archive_path: string | null;
  purge_after: Date | string | null;
  created_at: Date | string;
  updated_at: Date | string;
  version: number | string;
  lease_nonce: string | null;
}

const COLUMNS =
  "id, key, name, status, expires_at, rate_limit, allowed_tools, feature_flags, provisioning_step, archive_path, purge_after, created_at, updated_at, version, lease_nonce";

/** Returns the written row and NOTIFYs its id in the same statement: one round trip per write. */
const NOTIFYING_SELECT = `SELECT r.*, pg_notify('${NOTIFY_CHANNEL}', r.id) AS notified FROM r`;

const date = (v: Date | string | null): Date | null =>
  v === null ? null : v instanceof Date ? v : new Date(v);

function toRecord(row: TenantRow): TenantRecord {
  return {
    id: row.id,
    key: row.key,
    name: row.name,
    status: row.status,
    expiresAt: date(row.expires_at),
    config: Object.freeze({
      rateLimit: row.rate_limit,
      allowedTools: Object.freeze([...(row.allowed_tools ?? [])]),
      featureFlags: Object.freeze({ ...(row.feature_flags ?? {}) }),
    }),
    provisioningStep: row.provisioning_step,
    archivePath: row.archive_path,
    purgeAfter: date(row.purge_after),
    createdAt: date(row.created_at) as Date,
    updatedAt: date(row.updated_at) as Date,
    version: Number(row.version),
    leaseNonce: row.lease_nonce ?? null,
  };
}

/**
 * The registry's system of record: `tenantry_tenants`, read and written as the owner role.
 * Every write NOTIFYs so other replicas drop their cached entry.
 */
export class RegistryStore {
  readonly #db: Database;

  constructor(db: Database) {
    this.#db = db;
  }

  async get(id: string, q: Queryable = this.#db): Promise<TenantRecord | undefined> {
    const r = await q.query<TenantRow>(`SELECT ${COLUMNS} FROM tenantry_tenants WHERE id = $1`, [id]);
    return r.rows[0] ? toRecord(r.rows[0]) : undefined;
  }

  async list(
    options: { status?: TenantStatus; limit?: number; after?: string } = {},
  ): Promise<TenantRecord[]> {
    const r = await this.#db.query<TenantRow>(
      `SELECT ${COLUMNS} FROM tenantry_tenants
        WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR id > $2)
        ORDER BY id LIMIT $3`,
      [options.status ?? null, options.after ?? null, options.limit ?? 1000],
    );
    return r.rows.map(toRecord);
  }

  /**
   * Inserts a record in state `provisioning` with a new immutable key; `tenant_exists` if the id is
   * taken. `step` is its `provisioning_step` (a restore inserts its tenant already marked as its own).
   */
  async insert(t: NewTenant, q: Queryable = this.#db, step = "registered"): Promise<TenantRecord> {
    assertTenantId(t.id);
    const r = await q.query<TenantRow>(
      `WITH r AS (
       INSERT INTO tenantry_tenants (id, key, name, status, expires_at, rate_limit, allowed_tools, feature_flags, provisioning_step)
       VALUES ($1, to_hex(nextval('tenantry_tenant_key_seq')), $2, 'provisioning',
               CASE WHEN $3::int IS NULL THEN NULL ELSE now() + make_interval(days => $3::int) END,
               $4, $5, $6::jsonb, $7)
       ON CONFLICT (id) DO NOTHING
       RETURNING ${COLUMNS})
       ${NOTIFYING_SELECT}`,
      [
        t.id,
        t.name,
        t.trialDays ?? null,
        t.rateLimit ?? null,
        t.allowedTools ?? [],
        JSON.stringify(t.featureFlags ?? {}),
        step,
      ],
    );
    if (!r.rows[0]) throw new TenantryError("tenant_exists", `tenant ${t.id} already exists`);
    return toRecord(r.rows[0]);
  }

  async update(id: string, u: TenantUpdate, q: Queryable = this.#db): Promise<TenantRecord> {
    const record = await this.#update(id, u, {}, q);
    if (!record) throw new TenantryError("unknown_tenant", `tenant ${id} is not registered`);
    return record;
  }

  /**
   * Compare-and-set: applies `u` only if the record is still at `expect.version` and/or in
   * `expect.status`, and, with `expect.idleMs`, only if nothing has written it for at least that
   * long. Returns the written record, or `undefined` when another write (any replica, the CLI) got
   * there first, the record is too recently written, or it is gone; the caller decides what that means.
   *
   * `idleMs` is measured against `updated_at` by the database's clock alone, in the statement: a
   * lease or claim whose holder renews `updated_at` is judged alive or dead the same way by every
   * replica, whatever their own clocks say.
   */
  async updateIf(
    id: string,
    expect: ({ version: number; status?: TenantStatus } | { version?: undefined; status: TenantStatus }) & {
      idleMs?: number;
    },
    u: TenantUpdate,
    q: Queryable = this.#db,
  ): Promise<TenantRecord | undefined> {
    return this.#update(id, u, expect, q);
  }

  async #update(
    id: string,
    u: TenantUpdate,
    expect: { version?: number; status?: TenantStatus; idleMs?: number },
    q: Queryable,
  ): Promise<TenantRecord | undefined> {
    const sets: string[] = [];
    const params: unknown[] = [id];
    const set = (column: string, value: unknown, cast = "") => {
      params.push(value);
      sets.push(`${column} = $${params.length}${cast}`);
    };
    if (u.name !== undefined) set("name", u.name);
    if (u.rateLimit !== undefined) set("rate_limit", u.rateLimit);
    if (u.allowedTools !== undefined) set("allowed_tools", u.allowedTools);
    if (u.featureFlags !== undefined) {
      params.push(JSON.stringify(u.featureFlags));
      sets.push(
        u.replaceFlags
          ? `feature_flags = $${params.length}::jsonb`
          : `feature_flags = feature_flags || $${params.length}::jsonb`,
      );
    }
    if (u.status !== undefined) {
      set("status", u.status);
      sets.push("status_changed_at = now()");
    }
    if (u.expiresAt !== undefined) set("expires_at", u.expiresAt);
    if (u.provisioningStep !== undefined) set("provisioning_step", u.provisioningStep);
    if (u.archivePath !== undefined) set("archive_path", u.archivePath);
    if (u.leaseNonce !== undefined) set("lease_nonce", u.leaseNonce);
    if (u.purgeAfter !== undefined) set("purge_after", u.purgeAfter);
    sets.push("updated_at = now()", "version = version + 1");
    const where = ["id = $1"];
    if (expect.version !== undefined) {
      params.push(expect.version);
      where.push(`version = $${params.length}`);
    }
    if (expect.status !== undefined) {
      params.push(expect.status);
      where.push(`status = $${params.length}`);
    }
    if (expect.idleMs !== undefined) {
      params.push(expect.idleMs);
      where.push(`updated_at <= now() - $${params.length}::float8 * interval '1 millisecond'`);
    }
    const r = await q.query<TenantRow>(
      `WITH r AS (UPDATE tenantry_tenants SET ${sets.join(", ")} WHERE ${where.join(" AND ")} RETURNING ${COLUMNS})
       ${NOTIFYING_SELECT}`,
      params,
    );
    return r.rows[0] ? toRecord(r.rows[0]) : undefined;
  }

  /**
   * Compare-and-delete: removes the record only if it is still at `expect.version` and in
   * `expect.status`, and NOTIFYs only then (one statement). `false` when another write got there first.
   */
  async deleteIf(
    id: string,
    expect: { version: number; status: TenantStatus },
    q: Queryable = this.#db,
  ): Promise<boolean> {
    const r = await q.query(
      `WITH r AS (DELETE FROM tenantry_tenants WHERE id = $1 AND version = $2 AND status = $3 RETURNING id)
       ${NOTIFYING_SELECT}`,
      [id, expect.version, expect.status],
    );
    return r.rowCount > 0;
  }

  async delete(id: string, q: Queryable = this.#db): Promise<boolean> {
    const r = await q.query("DELETE FROM tenantry_tenants WHERE id = $1", [id]);
    await this.#notify(id, q);
    return r.rowCount > 0;
  }

  async #notify(id: string, q: Queryable): Promise<void> {
    await q.query("SELECT pg_notify($1, $2)", [NOTIFY_CHANNEL, id]);
  }
}
