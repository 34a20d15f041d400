import { rm } from "node:fs/promises";
import { isAbsolute, relative, resolve, sep } from "node:path";
import type { AuditSink } from "../audit/audit-event.js";
import type { Database } from "../db/database.js";
import { isTenantryError, TenantryError } from "../errors.js";
import type { DataIsolation } from "../isolation/data-isolation.js";
import type { ObjectStore } from "../isolation/storage/object-store.js";
import { readArchive } from "../isolation/tenant-archive.js";
import { markerKey, TenantData } from "../isolation/tenant-data.js";
import type { TenantRegistry } from "../tenancy/registry.js";
import type { RegistryStore } from "../tenancy/registry-store.js";
import {
  type NewTenant,
  TENANT_STATUSES,
  type TenantRecord,
  type TenantStatus,
  type TenantUpdate,
} from "../tenancy/tenant.js";
import { assertTenantId } from "../tenancy/tenant-id.js";
import { type Actor, writeAdminEvent } from "./admin-audit.js";
import { HoldLost, RegistryLease } from "./registry-lease.js";

export { markerKey } from "../isolation/tenant-data.js";
export type { Actor } from "./admin-audit.js";

export interface TenantServiceDeps {
  registry: TenantRegistry;
  isolation: DataIsolation;
  objects: ObjectStore;
  audit: AuditSink;
  replica: string;
  /** The owner connection (archive, purge, restore of rows). */
  db: Database;
  /** `[lifecycle] archive_dir`. */
  archiveDir: string;
  /** `[storage] max_object_bytes`: bounds archiving from an object store that cannot stream. */
  maxObjectBytes?: number;
  /** `[lifecycle] retention_days`: how long a deprovisioned tenant's data is kept before purge. */
  retentionDays: number;
  /**
   * How long deprovisioning waits between suspending a tenant and archiving it, so that every
   * replica has stopped serving it (the registry cache TTL). Default 1000 ms.
   */
  settleMs?: number;
  /**
   * How long a restore's hold on its tenant outlives the restore's last renewal of it: a restore
   * that died is taken over by another this long after it stopped. The running restore renews every
   * tenth of it. Default 5 minutes.
   */
  restoreLeaseMs?: number;
  /** How old a purge's claim must be for another purge to take it over. Default 10 minutes. */
  purgeClaimMs?: number;
  now?: () => number;
}

export const PROVISIONING_STEPS = ["registered", "database", "storage"] as const;

/** A tenant removed by `purge`; its archive stays where it was. */
export interface PurgedTenant {
  readonly id: string;
  readonly archivePath: string | null;
  readonly rows: number;
  readonly objects: number;
  /** Whether its archive verified before it was erased: false only for a tenant named in `withoutArchive`. */
  readonly archiveVerified: boolean;
}

export interface PurgeOptions {
  /** Every deprovisioned tenant, whatever its retention. */
  readonly now?: boolean;
  /**
   * Tenants to purge even though their archive does not verify (lost, damaged, never written):
   * the operator's decision that the data may go without a copy. Named one by one; a tenant not
   * named here is never erased without an archive that verifies.
   */
  readonly withoutArchive?: readonly string[];
}

/** A purge's result as the admin API and the CLI print it. */
export function purgeResultToJson(r: PurgeResult): Record<string, unknown> {
  return {
    purged: r.purged.map((p) => ({
      id: p.id,
      archive_path: p.archivePath,
      archive_verified: p.archiveVerified,
      rows: p.rows,
      objects: p.objects,
    })),
    failed: r.failed,
  };
}

export interface PurgeResult {
  readonly purged: PurgedTenant[];
  /** Tenants whose purge failed (they stay deprovisioned and are retried next time). */
  readonly failed: { readonly id: string; readonly code: string; readonly message: string }[];
}

/** The largest rate limit the registry's `integer` column holds. */
export const MAX_RATE_LIMIT = 2_147_483_647;
/** The longest trial (100 years): further ends are past what a date can hold, or PostgreSQL's `integer`. */
export const MAX_TRIAL_DAYS = 36_500;

function positiveInt(value: unknown, what: string, max: number): void {
  if (
    value !== undefined &&
    value !== null &&
    (!Number.isSafeInteger(value) || (value as number) <= 0 || (value as number) > max)
  ) {
    throw new TenantryError("invalid_argument", `${what} must be a positive integer, at most ${max}`);
  }
}

/** NUL is the one character PostgreSQL cannot store in `text` or `jsonb`. */
const hasNul = (text: string) => text.includes("\0");

const NAME_RULE = "--name must be 1-200 characters, without NUL";

/** Checks the fields `create` and `update` share, whichever are present. */
function checkFields(
  t: Partial<Pick<NewTenant, "name" | "rateLimit" | "allowedTools" | "featureFlags">>,
): void {
  if (t.name !== undefined) {
    if (typeof t.name !== "string" || t.name.trim() === "" || t.name.length > 200 || hasNul(t.name)) {
      throw new TenantryError("invalid_argument", NAME_RULE);
    }
  }
  positiveInt(t.rateLimit, "rate limit", MAX_RATE_LIMIT);
  if (t.allowedTools?.some((n) => typeof n !== "string" || n.length === 0 || n.length > 128 || hasNul(n))) {
    throw new TenantryError("invalid_argument", "allowed tools must be tool names");
  }
  if (t.featureFlags !== undefined) {
    for (const [k, v] of Object.entries(t.featureFlags)) {
      if (k.length === 0 || k.length > 128 || hasNul(k) || (typeof v === "string" && hasNul(v))) {
        throw new TenantryError(
          "invalid_argument",
          "feature flag names must be 1-128 characters, without NUL",
        );
      }
    }
  }
}

const DAY_MS = 86_400_000;

/** `provisioning_step` of a deprovisioned tenant a purge has claimed (see {@link TenantService.purge}). */
const PURGING = "purging";

/**
 * `provisioning_step` of a tenant a restore holds in `provisioning`, as a lease (see
 * {@link TenantService.restore}). `create` does not resume such a tenant: it would mark it active
 * with part of the archive restored (run the restore again).
 */
const RESTORING = "restoring";

/**
 * `provisioning_step` of a tenant whose restore failed and let it go: still unserved and not
 * resumable by `create`, but any restore may start on it at once.
 */
const RESTORE_FAILED = "restore_failed";

/**
 * A restore's hold outlives its last renewal by this much. A restore of a large tenant runs for
 * many minutes and renews all along (every tenth of this); the margin is for a database or event
 * loop stalled that long, and it is also how long a restore that died blocks the next one.
 */
const RESTORE_LEASE_MS = 5 * 60_000;

/**
 * A purge's claim younger than this is taken to be live: other purges (every replica runs the
 * purge job) leave the tenant to it. A live purge renews its claim every tenth of this (verifying a
 * large archive or erasing a large tenant takes a while), so an older one was left by a purge that
 * died, and the next purge takes it over. The age is the database's: `updated_at` against its own
 * `now()` (see `RegistryStore.updateIf`).
 */
const PURGE_CLAIM_MS = 10 * 60_000;

/** A lease or claim duration as the messages that mention it say it. */
function duration(ms: number): string {
  return ms >= 60_000 ? `${Math.round(ms / 60_000)} minutes` : `${Math.ceil(ms / 1000)} seconds`;
}

/**
 * Tenant operations shared by the CLI, the admin REST API and the admin tools. Each action is
 * written to the audit log first; if that write fails, the action does not happen.
 *
 * Lifecycle: `provisioning` → `active` | `trial` ⇄ `suspended` → `deprovisioned` (archived) →
 * purged (registry row gone, archive kept) → `restore` → `active`.
 */
export class TenantService {
  readonly #d: TenantServiceDeps;
  readonly #store: RegistryStore;
  readonly #data: TenantData;
  readonly #now: () => number;
  readonly #restoreLeaseMs: number;
  readonly #purgeClaimMs: number;

  constructor(deps: TenantServiceDeps) {
    this.#d = deps;
    this.#store = deps.registry.store;
    this.#data = new TenantData({
      db: deps.db,
      isolation: deps.isolation,
      objects: deps.objects,
      ...(deps.maxObjectBytes !== undefined ? { maxObjectBytes: deps.maxObjectBytes } : {}),
    });
    this.#now = deps.now ?? Date.now;
    this.#restoreLeaseMs = deps.restoreLeaseMs ?? RESTORE_LEASE_MS;
    this.#purgeClaimMs = deps.purgeClaimMs ?? PURGE_CLAIM_MS;
  }

  async list(
    options: { status?: TenantStatus; limit?: number; after?: string } = {},
  ): Promise<TenantRecord[]> {
    if (options.status !== undefined && !TENANT_STATUSES.includes(options.status)) {
      throw new TenantryError("invalid_argument", `status must be one of ${TENANT_STATUSES.join(", ")}`);
    }
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
   *
   * Every write after the first is a compare-and-set on the version the one before left: if another
   * operation wrote the tenant meanwhile (a second `create`, a `restore`, a `deprovision`), this
   * create fails with `tenant_conflict` and leaves the tenant as the other left it.
   */
  async create(actor: Actor, t: NewTenant, hooks: { afterStep?: (step: string) => Promise<void> } = {}) {
    assertTenantId(t.id);
    if (typeof t.name !== "string") throw new TenantryError("invalid_argument", NAME_RULE);
    checkFields(t);
    positiveInt(t.trialDays, "trial days", MAX_TRIAL_DAYS);
    let record = await this.#store.get(t.id);
    if (record && record.status !== "provisioning") {
      throw new TenantryError("tenant_exists", `tenant ${t.id} already exists (status ${record.status})`);
    }
    if (record?.provisioningStep === RESTORING || record?.provisioningStep === RESTORE_FAILED) {
      throw new TenantryError(
        "tenant_conflict",
        `tenant ${t.id} is being restored, or a restore of it failed: run the restore again`,
        { details: { conflict: true } },
      );
    }
    await this.#audit(actor, "tenant.create", t.id, {
      name: t.name,
      trial_days: t.trialDays ?? null,
      ...(record ? { resumed: record.provisioningStep } : {}),
    });
    record ??= await this.#store.insert(t);
    await hooks.afterStep?.("registered");
    record = await this.#provision(actor, "tenant.create", record, hooks, "database");
    const status: TenantStatus = record.expiresAt ? "trial" : "active";
    // Only if nothing wrote the tenant since: a deprovision or restore that overtook this create
    // keeps its result.
    record = await this.#transition(
      actor,
      "tenant.create",
      record,
      { status, provisioningStep: null },
      { version: record.version, status: "provisioning" },
    );
    this.#d.registry.invalidate(record.id);
    return record;
  }

  /**
   * `step` is what the database step records (`database`); a restore records none: its hold on
   * the tenant already says what it is, and is renewed apart (see {@link restore}).
   */
  async #provision(
    actor: Actor,
    action: string,
    record: TenantRecord,
    hooks: { afterStep?: (step: string) => Promise<void> },
    step?: string,
  ): Promise<TenantRecord> {
    // Every step is idempotent and a re-run repeats them all, so the recorded step is for people
    // (`tenants show`): it is written where it tells something, not after each step. Under
    // row_level_security the database step has nothing to do; the final status update that follows
    // the storage step records its end. The write is conditional like every other: a create and a
    // restore of one tenant must not both carry on.
    await this.#d.isolation.provisionTenant(record);
    if (step !== undefined && this.#d.isolation.strategy === "schema_per_tenant") {
      record = await this.#transition(actor, action, record, { provisioningStep: step });
    }
    await hooks.afterStep?.("database");

    const marker = JSON.stringify({
      id: record.id,
      key: record.key,
      created_at: record.createdAt.toISOString(),
    });
    await this.#d.objects.put(markerKey(record.key), new TextEncoder().encode(marker), "application/json");
    await hooks.afterStep?.("storage");
    return record;
  }

  /** Changes a tenant's name, limits, tools or flags; `convertTrial` makes a trial tenant active. */
  async update(
    actor: Actor,
    id: string,
    u: TenantUpdate & { convertTrial?: boolean },
  ): Promise<TenantRecord> {
    const current = await this.show(id);
    checkFields(u);
    const update: TenantUpdate = { ...u };
    delete (update as { convertTrial?: boolean }).convertTrial;
    if (u.convertTrial) {
      if (current.status !== "trial")
        throw new TenantryError("tenant_conflict", `tenant ${id} is not on a trial`);
      update.status = "active";
      update.expiresAt = null;
    }
    if (update.status !== undefined && !u.convertTrial) {
      throw new TenantryError("invalid_argument", "use suspend/resume/deprovision to change status");
    }
    for (const k of ["provisioningStep", "archivePath", "purgeAfter", "expiresAt"] as const) {
      if (update[k] !== undefined && !(k === "expiresAt" && u.convertTrial)) {
        throw new TenantryError("invalid_argument", `${k} is managed by the lifecycle, not by update`);
      }
    }
    await this.#audit(actor, "tenant.update", id, { ...summarise(update) });
    // Only while the status is still the one checked above (a trial converted after a deprovision
    // would be served again). The write bumps the version, so a deprovision in progress sees it.
    const record = await this.#transition(actor, "tenant.update", current, update, {
      status: current.status,
    });
    this.#d.registry.invalidate(id);
    return record;
  }

  async suspend(actor: Actor, id: string, reason?: string): Promise<TenantRecord> {
    const current = await this.show(id);
    if (current.status === "deprovisioned" || current.status === "provisioning") {
      throw new TenantryError("tenant_conflict", `tenant ${id} is ${current.status}`);
    }
    await this.#audit(actor, "tenant.suspend", id, { reason: reason ?? null, previous: current.status });
    const record = await this.#transition(actor, "tenant.suspend", current, { status: "suspended" });
    this.#d.registry.invalidate(id);
    return record;
  }

  /**
   * Resumes a suspended tenant: back to `trial` if it was on one (expired or not), else `active`.
   *
   * A tenant that a deprovision (on any replica, or the CLI) has suspended and is archiving can be
   * resumed: resume wins, and that deprovision fails when it comes to mark the tenant deprovisioned
   * (its write is conditional on the version it suspended, see {@link deprovision}) and removes
   * its archive. Refusing here instead would need an in-progress marker in the registry, and a
   * marker left by a process that died mid-archive would block resume until someone cleared it by
   * hand; a failed deprovision loses nothing and can be run again. The reverse order is covered
   * too: resume writes only if the tenant is still as read, so it never revives a tenant that a
   * deprovision finished meanwhile.
   */
  async resume(actor: Actor, id: string): Promise<TenantRecord> {
    const current = await this.show(id);
    if (current.status !== "suspended") {
      throw new TenantryError("tenant_conflict", `tenant ${id} is ${current.status}, not suspended`);
    }
    await this.#audit(actor, "tenant.resume", id, null);
    const status: TenantStatus = current.expiresAt ? "trial" : "active";
    const record = await this.#transition(actor, "tenant.resume", current, { status });
    this.#d.registry.invalidate(id);
    return record;
  }

  /**
   * Deprovisions a tenant: suspends it at once (the registry NOTIFY makes every replica refuse it),
   * waits `settleMs`, archives its rows and objects into `archive_dir/<id>-<timestamp>/` (fsynced,
   * files and directories, before anything else: see {@link TenantData.archive}), then marks it
   * `deprovisioned` with `purge_after = now + retention_days`. Its data stays in place until
   * `purge`. If archiving fails the tenant stays suspended, no archive is left (an archive directory
   * that cannot be written gives `backend_unavailable`), and `deprovision` can be run again.
   *
   * The final mark is a compare-and-set on the registry version the suspension wrote: if anything
   * changed the tenant meanwhile (a resume, suspend or update, a second deprovision, from any
   * replica or the CLI), the archive may have missed writes or be another's, so this deprovision
   * removes its archive, leaves the tenant as the other operation left it, records the failure in
   * the audit log and throws `tenant_conflict`.
   */
  async deprovision(actor: Actor, id: string): Promise<TenantRecord> {
    let record = await this.show(id);
    if (record.status === "deprovisioned") {
      throw new TenantryError("tenant_conflict", `tenant ${id} is already deprovisioned`);
    }
    // A live restore holds the tenant (see restore) and writes its data for minutes, renewing its
    // hold far less often than an archive takes: deprovisioning under it would archive half a
    // restore and mark the tenant deprovisioned while the restore still writes (then a purge
    // erases, and the restore's later writes are left behind). Refused like a second restore; a
    // dead restore's hold (not renewed for a whole lease, by the database's clock) is taken over
    // in the one conditional write, before anything else is written.
    if (record.status === "provisioning" && record.provisioningStep === RESTORING) {
      record = await this.#takeOverRestore(
        record,
        RESTORE_FAILED,
        `deprovision it once the restore is done (a restore that was interrupted lets it go ${duration(this.#restoreLeaseMs)} after it stopped)`,
      );
    }
    await this.#audit(actor, "tenant.deprovision", id, {
      previous: record.status,
      retention_days: this.#d.retentionDays,
    });
    if (record.status !== "suspended" && record.status !== "provisioning") {
      record = await this.#transition(actor, "tenant.deprovision", record, { status: "suspended" });
      this.#d.registry.invalidate(id);
      const settle = this.#d.settleMs ?? 1000;
      if (settle > 0) await new Promise((r) => setTimeout(r, settle));
    }
    const { path } = await this.#data.archive(record, this.#d.archiveDir);
    let done: TenantRecord | undefined;
    try {
      done = await this.#store.updateIf(
        id,
        { version: record.version, status: record.status },
        {
          status: "deprovisioned",
          archivePath: path,
          purgeAfter: new Date(this.#now() + this.#d.retentionDays * DAY_MS),
        },
      );
    } catch (error) {
      // The write failed, or only its reply was lost: the archive goes unless the record names it.
      // If the record cannot be read either, it stays (an orphan is harmless; a record naming a
      // removed archive would block the purge).
      const now = await this.#store.get(id).catch(() => null);
      if (now !== null && now?.archivePath !== path)
        await rm(path, { recursive: true, force: true }).catch(() => {});
      throw error;
    }
    if (!done) {
      // Nothing refers to this archive; removing it keeps a later restore from picking a stale one.
      await rm(path, { recursive: true, force: true }).catch(() => {});
      throw await this.#lostRace(actor, "tenant.deprovision", id);
    }
    this.#d.registry.invalidate(id);
    return done;
  }

  /**
   * Purges deprovisioned tenants whose `purge_after` has passed (every deprovisioned tenant with
   * `now: true`): deletes their rows (or drops their schema), their objects and storage marker,
   * and their registry row. Archives are kept. One tenant's failure does not stop the others.
   *
   * Purge and restore of one tenant may overlap (the purge job runs unattended on every replica),
   * and both erase the tenant's data; restore then writes it again. So that a purge never erases
   * what a restore wrote, nor removes a tenant a restore reported restored, a purge first claims
   * the tenant: a compare-and-set on the version it read, still `deprovisioned`, that marks it
   * `provisioning_step = "purging"`. Only then does it write its audit event and erase; its final
   * delete is conditional on the claim's version. Every interleaving then ends one way or the other:
   * - restore wrote first (it read the tenant before the claim and moved it to `provisioning`):
   *   the claim fails and this purge leaves the tenant alone, writing nothing, not even an event;
   * - the claim came first: a restore that reads the tenant afterwards refuses to start
   *   (`tenant_conflict`, nothing written), and one that read it before fails its own first
   *   compare-and-set (its `ok` event is followed by an `error` one, as every lost race's), so no
   *   restore writes data while a purge may still erase. The purge completes; the restore can be
   *   run again and re-creates the tenant (the purged path, with a new key).
   * Once claimed, and before its audit event or any erasing, the tenant's archive must verify
   * ({@link readArchive}: the manifest, every file's size and sha256) and be of this tenant: after
   * the purge it is the only copy of the data. A tenant whose archive is missing or does not verify
   * (a crash that truncated it, a disk that lost it, a hand that deleted it), or that has none, is
   * not purged: it is listed under `failed` with `backend_unavailable` (the archive directory is
   * failing; nothing the operator passed was wrong), its claim is released and its data kept, and
   * the next purge tries again, so it is purged once its archive is put back. An archive that is
   * gone for good would keep its tenant's data forever: a tenant named in `withoutArchive` is
   * purged all the same (its audit event records `archive_verified: false` and why), and only that
   * one — the operator's decision, tenant by tenant.
   * If erasing fails, or the audit write does, the claim is released and the tenant stays
   * deprovisioned (retried next time). The claim is renewed while the purge runs (see
   * {@link RegistryLease}); a purge that cannot renew it stops before its audit event or before
   * erasing, as a lost race. A claim left by a purge that died is finished by the next
   * purge once it is {@link PURGE_CLAIM_MS} old by the database's clock, whatever `purge_after` says
   * (a restore waits until then). If anything else wrote the tenant during the erase (an `update`), its data is gone but
   * its row is kept, still claimed: that is a failure, recorded in the audit log, and a later purge
   * finishes it.
   */
  async purge(actor: Actor, options: PurgeOptions = {}): Promise<PurgeResult> {
    const withoutArchive = new Set(options.withoutArchive ?? []);
    if (withoutArchive.size > 1000) {
      throw new TenantryError("invalid_argument", "name at most 1000 tenants to purge without an archive");
    }
    for (const id of withoutArchive) assertTenantId(id);
    const due: TenantRecord[] = [];
    const at = this.#now();
    for (let after: string | undefined; ; ) {
      const page = await this.#store.list({
        status: "deprovisioned",
        limit: 500,
        ...(after ? { after } : {}),
      });
      for (const r of page)
        if (
          options.now ||
          r.provisioningStep === PURGING ||
          (r.purgeAfter !== null && r.purgeAfter.getTime() <= at)
        )
          due.push(r);
      if (page.length < 500) break;
      after = page.at(-1)!.id;
    }
    const result: PurgeResult = { purged: [], failed: [] };
    for (const listed of due) {
      try {
        // The list may be old by now: a tenant restored since is active again and must be left alone.
        const record = await this.#store.get(listed.id);
        if (record?.status !== "deprovisioned" || record.archivePath !== listed.archivePath) continue;
        // Another purge's claim is taken over only once it is old by the database's clock: this
        // replica's may be skewed from it, and from every other replica's.
        const claimSent = performance.now();
        const claimed = await this.#store.updateIf(
          record.id,
          {
            version: record.version,
            status: "deprovisioned",
            ...(record.provisioningStep === PURGING ? { idleMs: this.#purgeClaimMs } : {}),
          },
          { provisioningStep: PURGING },
        );
        // Another purge is at it, or a restore (or another purge) wrote it first: it is theirs.
        if (!claimed) continue;
        // Held as a lease for as long as this purge runs (verifying a large archive, erasing a
        // large tenant): renewed, so that only a purge that died is taken over.
        const lease = new RegistryLease(
          this.#store,
          claimed,
          { provisioningStep: PURGING },
          this.#purgeClaimMs,
          claimSent,
        );
        let erased: { rows: number; objects: number };
        /** Why its archive did not verify, for a tenant the operator named in `withoutArchive`. */
        let unverified: string | undefined;
        try {
          try {
            await this.#verifyArchive(claimed);
          } catch (error) {
            if (!withoutArchive.has(claimed.id) || !isTenantryError(error, "backend_unavailable"))
              throw error;
            unverified = error.message;
          }
          lease.assertHeld();
          await this.#audit(actor, "tenant.purge", claimed.id, {
            archive_path: claimed.archivePath,
            purge_after: claimed.purgeAfter?.toISOString() ?? null,
            forced: options.now === true,
            archive_verified: unverified === undefined,
            ...(unverified === undefined ? {} : { archive_problem: unverified }),
          });
          lease.assertHeld();
          erased = await this.#data.erase(claimed);
        } catch (error) {
          const held = await lease.stop();
          await this.#store
            .updateIf(held.id, { version: held.version }, { provisioningStep: null })
            .catch(() => undefined);
          if (error instanceof HoldLost) throw await this.#lostRace(actor, "tenant.purge", claimed.id);
          throw error;
        }
        const held = await lease.stop();
        if (!(await this.#store.deleteIf(claimed.id, { version: held.version, status: "deprovisioned" }))) {
          throw await this.#lostRace(actor, "tenant.purge", claimed.id, {
            outcome: "erased its data but kept its registry row",
            details: { erased: true },
          });
        }
        this.#d.registry.invalidate(claimed.id);
        result.purged.push({
          id: claimed.id,
          archivePath: claimed.archivePath,
          archiveVerified: unverified === undefined,
          ...erased,
        });
      } catch (error) {
        result.failed.push({
          id: listed.id,
          code: error instanceof TenantryError ? error.code : "internal",
          message: error instanceof TenantryError ? error.message : "purge failed",
        });
      }
    }
    return result;
  }

  /**
   * Throws unless `record` has an archive that verifies and is of this tenant (its id, and its key
   * when the manifest records one: an archive of an earlier tenant with this id is not its data).
   * Every deprovision writes an archive and records its path, so a deprovisioned tenant without
   * one was not deprovisioned by Tenantry: it is refused too, never purged without a copy.
   */
  async #verifyArchive(record: TenantRecord): Promise<void> {
    const refuse = (why: string, cause?: unknown): never => {
      throw new TenantryError(
        "backend_unavailable",
        `tenant ${record.id} was not purged: ${why}; its data was kept, it stays deprovisioned, and purge tries again once its archive verifies`,
        cause === undefined ? {} : { cause },
      );
    };
    if (record.archivePath === null) refuse("it has no archive");
    const path = record.archivePath as string;
    let manifest: Awaited<ReturnType<typeof readArchive>>;
    try {
      manifest = await readArchive(path);
    } catch (error) {
      // readArchive's message names the archive and its first problem (invalid_argument to a
      // restore, whose argument it is; here it is the archive directory that failed).
      manifest = refuse(
        `its archive does not verify (${error instanceof TenantryError ? error.message : `${path}: unreadable`})`,
        error,
      );
    }
    const key = manifest.tenant.key;
    if (manifest.tenant.id !== record.id) {
      refuse(`its archive ${path} is of tenant ${manifest.tenant.id}`);
    }
    if (key !== undefined && key !== record.key) {
      refuse(`its archive ${path} is of an earlier tenant ${record.id} (another key)`);
    }
  }

  /**
   * Restores a tenant from an archive: verifies every checksum, re-creates the tenant with the same
   * id (a new key when it was purged; its data is replaced when it was only deprovisioned),
   * re-provisions it, re-inserts its rows and objects, and makes it `active`. A failed restore
   * leaves the tenant unserved (`provisioning`) and can be run again; `create` does not resume it.
   * As in `create`, every write is conditional on the one before: an operation that wrote the
   * tenant meanwhile makes this restore fail with `tenant_conflict`.
   *
   * A restore erases the tenant's data and then writes it for minutes on end, so two restores of
   * one tenant (replicas, the CLI) must never overlap: the second would erase and write under the
   * first and mix their data. The restore therefore holds the tenant as a lease from its first
   * registry write to its last (`provisioning_step = "restoring"`, renewed, see
   * {@link RegistryLease}). Another restore refuses to start on a held tenant (`tenant_conflict`,
   * `details.conflict`, nothing written) unless the holder has not renewed for
   * {@link RESTORE_LEASE_MS} by the database's clock, which only a restore that died lets happen;
   * that one is taken over. A restore that fails in this process lets the tenant go
   * (`restore_failed`): still unserved and not resumed by `create`, but a restore may run at once.
   *
   * `path` is resolved against `archive_dir`; with `confine`, it must also lie inside it (the
   * admin API, where the path comes from a remote caller).
   */
  async restore(actor: Actor, path: string, options: { confine?: boolean } = {}): Promise<TenantRecord> {
    const dir = this.resolveArchivePath(path, options);
    const manifest = await readArchive(dir);
    const t = manifest.tenant;
    const id = assertTenantId(t.id);
    let record = await this.#store.get(id);
    if (record && record.status !== "deprovisioned" && record.status !== "provisioning") {
      throw new TenantryError(
        "tenant_exists",
        `tenant ${id} exists and is ${record.status}: nothing to restore`,
      );
    }
    // A purge may be erasing this tenant: restored data would be erased after us (see purge).
    if (record?.status === "deprovisioned" && record.provisioningStep === PURGING) {
      throw new TenantryError(
        "tenant_conflict",
        `tenant ${id} is being purged: restore it once the purge is done (a purge that was interrupted is finished by any purge run ${duration(this.#purgeClaimMs)} or more after it started)`,
        { details: { conflict: true } },
      );
    }
    // Another restore holds the tenant: it is taken over only if its lease ran out (it died), in
    // the one conditional write, before anything else is written; like a purge's claim.
    let takenOver = false;
    /** When the write that gave this restore its hold was sent (`performance.now()`). */
    let heldSince = performance.now();
    if (record?.status === "provisioning" && record.provisioningStep === RESTORING) {
      record = await this.#takeOverRestore(
        record,
        RESTORING,
        `run this one again once that one is done (a restore that was interrupted is taken over by any restore run ${duration(this.#restoreLeaseMs)} or more after it stopped)`,
        "by another restore",
      );
      takenOver = true;
    }
    try {
      await this.#audit(actor, "tenant.restore", id, {
        archive_path: dir,
        tables: manifest.tables.map((x) => ({ name: x.name, rows: x.rows })),
        objects: manifest.objects.length,
        ...(record ? { replaces: takenOver ? "restoring" : record.status } : {}),
      });
    } catch (error) {
      if (record && takenOver) await this.#releaseRestore(record);
      throw error;
    }
    const erase = record !== undefined; // its data, or another restore's part of the archive
    if (record) {
      if (!takenOver) {
        heldSince = performance.now();
        record = await this.#transition(actor, "tenant.restore", record, {
          status: "provisioning",
          provisioningStep: RESTORING,
        });
      }
      this.#d.registry.invalidate(id);
    } else {
      // Inserted already marked as the restore's, in the one statement: a restore that died right
      // after inserting must not leave a tenant that `create` would resume (and make active empty).
      try {
        heldSince = performance.now();
        record = await this.#store.insert(
          {
            id,
            name: typeof t.name === "string" ? t.name : id,
            ...(typeof t.rate_limit === "number" ? { rateLimit: t.rate_limit } : {}),
            ...(Array.isArray(t.allowed_tools) ? { allowedTools: t.allowed_tools as string[] } : {}),
            ...(isFlags(t.feature_flags) ? { featureFlags: t.feature_flags } : {}),
          },
          undefined,
          RESTORING,
        );
      } catch (error) {
        // Another restore (or a create) registered it since we read: it is theirs.
        if (error instanceof TenantryError && error.code === "tenant_exists") {
          throw await this.#lostRace(actor, "tenant.restore", id);
        }
        throw error;
      }
    }
    const lease = new RegistryLease(
      this.#store,
      record,
      { provisioningStep: RESTORING },
      this.#restoreLeaseMs,
      heldSince,
    );
    // Before every write of data: a hold that is gone (another write took the tenant) or may be
    // (no renewal got through for most of a lease) means another restore may be erasing and
    // writing this tenant now, so this one writes nothing more.
    const stillHeld = () => lease.assertHeld();
    try {
      if (erase) await this.#data.erase(record);
      await this.#provision(actor, "tenant.restore", record, {});
      stillHeld();
      await this.#data.restore(record, dir, manifest, stillHeld);
      stillHeld();
      const held = await lease.stop();
      record = await this.#transition(
        actor,
        "tenant.restore",
        held,
        { status: "active", provisioningStep: null, expiresAt: null, archivePath: dir, purgeAfter: null },
        { version: held.version, status: "provisioning" },
      );
    } catch (error) {
      await this.#releaseRestore(await lease.stop());
      if (error instanceof HoldLost) throw await this.#lostRace(actor, "tenant.restore", id);
      throw error;
    }
    this.#d.registry.invalidate(id);
    return record;
  }

  /**
   * Takes over a tenant a restore holds (see {@link restore}), writing `provisioning_step = step`,
   * only if that restore died: its hold unrenewed for a whole lease, by the database's clock, in
   * the one conditional write, before anything else is written. A live restore's tenant is
   * refused with `tenant_conflict` (`details.conflict`), "being restored [`whom`]: `then`".
   */
  async #takeOverRestore(
    record: TenantRecord,
    step: string,
    then: string,
    whom?: string,
  ): Promise<TenantRecord> {
    const taken = await this.#store.updateIf(
      record.id,
      { version: record.version, status: "provisioning", idleMs: this.#restoreLeaseMs },
      { provisioningStep: step },
    );
    if (!taken) {
      throw new TenantryError(
        "tenant_conflict",
        `tenant ${record.id} is being restored${whom ? ` ${whom}` : ""}: ${then}`,
        { details: { conflict: true } },
      );
    }
    return taken;
  }

  /**
   * Lets a tenant go after its restore failed in this process, if the restore still holds it: the
   * operator can run the restore again at once rather than wait for the lease to run out.
   */
  async #releaseRestore(held: TenantRecord): Promise<void> {
    await this.#store
      .updateIf(
        held.id,
        { version: held.version, status: "provisioning" },
        { provisioningStep: RESTORE_FAILED },
      )
      .catch(() => undefined);
  }

  /** An archive path as the service reads it: absolute, or relative to `archive_dir`. */
  resolveArchivePath(path: string, options: { confine?: boolean } = {}): string {
    if (typeof path !== "string" || path.length === 0 || path.length > 4096 || path.includes("\0")) {
      throw new TenantryError("invalid_argument", "archive must be a path");
    }
    const root = resolve(this.#d.archiveDir);
    const dir = resolve(root, path);
    if (options.confine) {
      const rel = relative(root, dir);
      if (rel === "" || rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
        throw new TenantryError(
          "invalid_argument",
          "the archive must be a directory inside lifecycle.archive_dir",
        );
      }
    }
    return dir;
  }

  async #audit(actor: Actor, action: string, tenantId: string, details: Record<string, unknown> | null) {
    await writeAdminEvent(this.#d.audit, this.#d.replica, { actor, action, tenantId, details });
  }

  /**
   * Writes `u` only if the tenant is still as `seen` shows it: the same version, or what `expect`
   * says. Several replicas and the CLI write the registry; a write based on an old read
   * must not undo theirs.
   */
  async #transition(
    actor: Actor,
    action: string,
    seen: TenantRecord,
    u: TenantUpdate,
    expect: Parameters<RegistryStore["updateIf"]>[1] | undefined = undefined,
  ): Promise<TenantRecord> {
    const record = await this.#store.updateIf(seen.id, expect ?? { version: seen.version }, u);
    if (!record) throw await this.#lostRace(actor, action, seen.id);
    return record;
  }

  /**
   * The error for an action that lost a race with another operation on the same tenant. Its audit
   * event was written as `ok` before it was attempted, so a second event says it did not take
   * effect (best effort: the conflict is the error the caller gets either way). `partly` says what
   * did take effect, when something did.
   */
  async #lostRace(
    actor: Actor,
    action: string,
    id: string,
    partly?: { outcome: string; details: Record<string, unknown> },
  ): Promise<TenantryError> {
    const now = await this.#store.get(id).catch(() => undefined);
    const state = !now
      ? "it is no longer registered"
      : now.status === "deprovisioned" && now.provisioningStep === PURGING
        ? "it is being purged"
        : `it is now ${now.status}`;
    await writeAdminEvent(this.#d.audit, this.#d.replica, {
      actor,
      action,
      tenantId: id,
      details: { conflict: now?.status ?? null, ...partly?.details },
      outcome: "error",
      errorCode: "tenant_conflict",
    }).catch(() => {});
    return new TenantryError(
      "tenant_conflict",
      `${action} of tenant ${id} ${partly?.outcome ?? "was not done"}: another operation changed the tenant meanwhile (${state}); run it again if still wanted`,
      { details: { conflict: true } },
    );
  }
}

function isFlags(v: unknown): v is Record<string, boolean | string | number> {
  return (
    typeof v === "object" &&
    v !== null &&
    !Array.isArray(v) &&
    Object.values(v).every((x) => ["boolean", "string", "number"].includes(typeof x))
  );
}

function summarise(u: TenantUpdate): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(u)) out[k] = v instanceof Date ? v.toISOString() : v;
  return out;
}
