import type { AuditEvent, AuditSink } from "../audit/audit-event.js";
import { TenantryError } from "../errors.js";
import type { DataIsolation } from "../isolation/data-isolation.js";
import type { ObjectStore } from "../isolation/storage/object-store.js";
import type { TenantRegistry } from "../tenancy/registry.js";
import type { RegistryStore } from "../tenancy/registry-store.js";
import type { NewTenant, TenantRecord, TenantStatus, TenantUpdate } from "../tenancy/tenant.js";
import { assertTenantId } from "../tenancy/tenant-id.js";

/** Who asks for an admin action: a global admin's id, or `cli` / `system`. */
export interface Actor {
  readonly id: string;
  readonly requestId?: string;
}

export interface TenantServiceDeps {
  registry: TenantRegistry;
  isolation: DataIsolation;
  objects: ObjectStore;
  audit: AuditSink;
  replica: string;
}

export const PROVISIONING_STEPS = ["registered", "database", "storage"] as const;

/** The storage marker written at provisioning, outside every tenant's visible prefix. */
export function markerKey(tenantKey: string): string {
  return `_tenantry/markers/${tenantKey}.json`;
}

function positiveInt(value: unknown, what: string): void {
  if (value !== undefined && value !== null && (!Number.isSafeInteger(value) || (value as number) <= 0)) {
    throw new TenantryError("invalid_argument", `${what} must be a positive integer`);
  }
}

/**
 * Tenant operations shared by the CLI, the admin REST API and the admin tools. Each action is
 * written to the audit log first; if that write fails, the action does not happen.
 */
export class TenantService {
  readonly #d: TenantServiceDeps;
  readonly #store: RegistryStore;

  constructor(deps: TenantServiceDeps) {
    this.#d = deps;
    this.#store = deps.registry.store;
  }

  list(options: { status?: TenantStatus; limit?: number; after?: string } = {}): Promise<TenantRecord[]> {
    return this.#store.list(options);
  }

  async show(id: string): Promise<TenantRecord> {
    const record = await this.#store.get(assertTenantId(id));
    if (!record) throw new TenantryError("unknown_tenant", `tenant ${id} is not registered`);
    return record;
  }

  /**
   * Provisions a tenant: record in `provisioning` → database objects → storage marker → `active`
   * (or `trial`). Every step is idempotent, so calling `create` again for a tenant left in
   * `provisioning` by a crash resumes it; a tenant is never served before the last step.
   */
  async create(actor: Actor, t: NewTenant, hooks: { afterStep?: (step: string) => Promise<void> } = {}) {
    assertTenantId(t.id);
    if (typeof t.name !== "string" || t.name.trim() === "" || t.name.length > 200) {
      throw new TenantryError("invalid_argument", "--name must be 1-200 characters");
    }
    positiveInt(t.rateLimit, "rate limit");
    positiveInt(t.trialDays, "trial days");
    if (t.allowedTools?.some((n) => typeof n !== "string" || n.length === 0 || n.length > 128)) {
      throw new TenantryError("invalid_argument", "allowed tools must be tool names");
    }
    await this.#audit(actor, "tenant.create", t.id, { name: t.name, trial_days: t.trialDays ?? null });
    let record = await this.#store.get(t.id);
    if (record && record.status !== "provisioning") {
      throw new TenantryError("tenant_exists", `tenant ${t.id} already exists (status ${record.status})`);
    }
    record ??= await this.#store.insert(t);
    await hooks.afterStep?.("registered");

    await this.#d.isolation.provisionTenant(record);
    record = await this.#store.update(record.id, { provisioningStep: "database" });
    await hooks.afterStep?.("database");

    const marker = JSON.stringify({
      id: record.id,
      key: record.key,
      created_at: record.createdAt.toISOString(),
    });
    await this.#d.objects.put(markerKey(record.key), new TextEncoder().encode(marker), "application/json");
    record = await this.#store.update(record.id, { provisioningStep: "storage" });
    await hooks.afterStep?.("storage");

    const status: TenantStatus = record.expiresAt ? "trial" : "active";
    record = await this.#store.update(record.id, { status, provisioningStep: null });
    this.#d.registry.invalidate(record.id);
    return record;
  }

  /** Changes a tenant's name, limits, tools or flags; `convertTrial` makes a trial tenant active. */
  async update(
    actor: Actor,
    id: string,
    u: TenantUpdate & { convertTrial?: boolean },
  ): Promise<TenantRecord> {
    const current = await this.show(id);
    positiveInt(u.rateLimit, "rate limit");
    const update: TenantUpdate = { ...u };
    delete (update as { convertTrial?: boolean }).convertTrial;
    if (u.convertTrial) {
      if (current.status !== "trial")
        throw new TenantryError("invalid_argument", `tenant ${id} is not on a trial`);
      update.status = "active";
      update.expiresAt = null;
    }
    if (update.status !== undefined && !u.convertTrial) {
      throw new TenantryError("invalid_argument", "use suspend/resume/deprovision to change status");
    }
    await this.#audit(actor, "tenant.update", id, { ...summarise(update) });
    const record = await this.#store.update(id, update);
    this.#d.registry.invalidate(id);
    return record;
  }

  async suspend(actor: Actor, id: string, reason?: string): Promise<TenantRecord> {
    const current = await this.show(id);
    if (current.status === "deprovisioned") {
      throw new TenantryError("invalid_argument", `tenant ${id} is deprovisioned`);
    }
    await this.#audit(actor, "tenant.suspend", id, { reason: reason ?? null, previous: current.status });
    const record = await this.#store.update(id, { status: "suspended" });
    this.#d.registry.invalidate(id);
    return record;
  }

  /** Resumes a suspended tenant: back to `trial` if its trial has not ended, else `active`. */
  async resume(actor: Actor, id: string): Promise<TenantRecord> {
    const current = await this.show(id);
    if (current.status !== "suspended") {
      throw new TenantryError("invalid_argument", `tenant ${id} is ${current.status}, not suspended`);
    }
    await this.#audit(actor, "tenant.resume", id, null);
    const status: TenantStatus = current.expiresAt ? "trial" : "active";
    const record = await this.#store.update(id, { status });
    this.#d.registry.invalidate(id);
    return record;
  }

  async #audit(actor: Actor, action: string, tenantId: string, details: Record<string, unknown> | null) {
    const event: AuditEvent = {
      at: new Date().toISOString(),
      kind: "admin",
      tenantId,
      userId: actor.id,
      impersonatedBy: null,
      action,
      tool: null,
      outcome: "ok",
      errorCode: null,
      latencyMs: null,
      requestId: actor.requestId ?? null,
      replica: this.#d.replica,
      details,
    };
    try {
      await this.#d.audit.write(event);
    } catch (error) {
      throw new TenantryError(
        "audit_write_failed",
        `${action} was not performed: the audit log is unavailable`,
        {
          cause: error,
        },
      );
    }
  }
}

function summarise(u: TenantUpdate): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(u)) out[k] = v instanceof Date ? v.toISOString() : v;
  return out;
}
