import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { markerKey, type TenantServiceDeps } from "../../src/admin/tenant-service.js";
import type { Database } from "../../src/db/database.js";
import { isTenantryError } from "../../src/errors.js";
import { storagePrefixForKey } from "../../src/isolation/names.js";
import { RegistryStore } from "../../src/tenancy/registry-store.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";
import { adminApi, mcp, otherReplica, toolResult } from "./helpers.js";

const pgUp = await serviceGate("postgres");
/** Where storage markers live: written by provisioning, before any archived object. */
const MARKERS = markerKey("").slice(0, -".json".length);

/**
 * A restore erases a tenant, then writes its rows and objects for as long as the archive takes. Two
 * restores of one tenant (two replicas, the CLI and the admin API; they share only the database)
 * must never overlap: the second would erase under the first and write its own copy, mixing both.
 * The one that comes second is refused while the first is alive, and takes over one that died.
 */
describe.each([
  { backend: "PGlite", postgres: false },
  { backend: "PostgreSQL", postgres: true },
])("two restores of one tenant ($backend)", ({ postgres }) => {
  describe.skipIf(postgres && !pgUp)("restore lease", () => {
    let db: TestDatabase | undefined;
    let h: Harness;
    const actor = { id: "test" };

    beforeAll(async () => {
      db = postgres ? await createTestDatabase() : undefined;
      h = await startHarness({
        tenants: 0,
        tools: demoTools,
        migrations: demoMigrations,
        config: {
          ...(db ? { database: { url: db.runtimeUrl, admin_url: db.adminUrl } } : {}),
          auth: { multi_tenant: { registry_cache_ttl_ms: 10 } },
        },
      });
    }, 60_000);
    afterAll(async () => {
      await h?.close();
      await db?.drop();
    });

    /** Another replica's service on the same databases, with its own leases, claims and clock. */
    const replica = (deps: Partial<TenantServiceDeps>) => otherReplica(h, deps);

    const call = async (id: string, name: string, args: Record<string, unknown> = {}) =>
      toolResult<Record<string, unknown>>(
        await mcp(h, await h.token(id), "tools/call", { name, arguments: args }),
      );
    /** What the tenant holds, as its tools see it. */
    const contents = async (id: string) => ({
      notes: ((await call(id, "notes_list")).notes as { title: string }[]).map((n) => n.title).sort(),
      documents: ((await call(id, "documents_list")).keys as string[]).sort(),
    });
    const ARCHIVED = { notes: ["one", "two"], documents: ["a.txt", "b.txt", "c.txt"] };

    /** A tenant with two notes and three documents, deprovisioned: its archive path and key. */
    async function archived(id: string) {
      await h.app.tenants.create(actor, { id, name: id });
      for (const title of ARCHIVED.notes) await call(id, "notes_create", { title, body: "b" });
      for (const key of ARCHIVED.documents) await call(id, "documents_put", { key, content: key });
      const dep = await h.app.tenants.deprovision(actor, id);
      return { archive: dep.archivePath!, key: dep.key };
    }

    /**
     * Stops the next restore when it writes its first archived object: its rows are committed, its
     * objects half written. `release` lets it go on; `kill` makes it stop there, as a process that died.
     */
    function midRestore() {
      const objects = h.app.objects;
      const method = objects.putStream ? "putStream" : "put";
      const original = (objects[method] as (...a: unknown[]) => Promise<unknown>).bind(objects);
      let reached!: () => void;
      const atObject = new Promise<void>((r) => {
        reached = r;
      });
      let resume!: (go: boolean) => void;
      const gate = new Promise<boolean>((r) => {
        resume = r;
      });
      let held = false;
      const spy = vi.spyOn(objects, method as "put").mockImplementation((async (...args: unknown[]) => {
        if (!held && !String(args[0]).startsWith(MARKERS)) {
          held = true;
          reached();
          if (!(await gate)) throw new Error("the restore's process died");
        }
        return original(...args);
      }) as typeof objects.put);
      return {
        atObject,
        release: () => resume(true),
        kill: () => resume(false),
        restore: () => spy.mockRestore(),
      };
    }

    const restoreEvents = async (id: string) =>
      (await h.app.adminServices.auditLog.query({ tenant: id, action: "tenant.restore" })).map(
        (e) => e.outcome,
      );

    it("a second restore while the first writes is refused; the tenant ends with exactly the archive's data", async () => {
      const id = "twice-co";
      const { archive } = await archived(id);
      const gate = midRestore();
      try {
        const first = h.app.tenants.restore(actor, archive);
        await gate.atObject;
        // From another replica, and from this one: both refused, nothing erased or written.
        const second = await replica({})
          .restore(actor, archive)
          .catch((e: unknown) => e);
        const third = await h.app.tenants.restore(actor, archive).catch((e: unknown) => e);
        for (const refused of [second, third]) {
          expect(isTenantryError(refused, "tenant_conflict")).toBe(true);
          expect(refused).toMatchObject({ details: { conflict: true } });
          expect((refused as Error).message).toMatch(/being restored by another restore/);
        }
        expect(await h.app.tenants.show(id)).toMatchObject({
          status: "provisioning",
          provisioningStep: "restoring",
        });
        gate.release();
        expect(await first).toMatchObject({ id, status: "active", provisioningStep: null });
      } finally {
        gate.release();
        gate.restore();
      }
      expect(await contents(id)).toEqual(ARCHIVED);
      expect(await restoreEvents(id)).toEqual(["ok"]); // the refused ones were never attempted
    });

    it("a live restore renews its hold: it is not taken over however long it runs", async () => {
      const id = "slow-co";
      const { archive } = await archived(id);
      const LEASE = 1000; // renewed every 100 ms
      const gate = midRestore();
      try {
        const slow = replica({ restoreLeaseMs: LEASE }).restore(actor, archive);
        await gate.atObject;
        const held = await h.app.tenants.show(id);
        await new Promise((r) => setTimeout(r, 2.5 * LEASE));
        // Written by its renewals since: still the slow restore's.
        expect((await h.app.tenants.show(id)).version).toBeGreaterThan(held.version);
        const other = await replica({ restoreLeaseMs: LEASE })
          .restore(actor, archive)
          .catch((e: unknown) => e);
        expect(other).toMatchObject({ code: "tenant_conflict", details: { conflict: true } });
        gate.release();
        // Its last write is conditional on the version its last renewal left.
        expect(await slow).toMatchObject({ id, status: "active" });
      } finally {
        gate.release();
        gate.restore();
      }
      expect(await contents(id)).toEqual(ARCHIVED);
    });

    it("a restore that died is taken over once its lease ran out, by the database's clock", async () => {
      const id = "dead-co";
      const { archive, key } = await archived(id);
      await h.app.tenants.purge(actor, { now: true }); // purged: the dying restore inserts it
      const gate = midRestore();
      // Renews hourly: in this test it never renews, as a process that was killed.
      const dying = replica({ restoreLeaseMs: 36_000_000 })
        .restore(actor, archive)
        .catch((e: unknown) => e);
      try {
        const newKey = await (async () => {
          await gate.atObject;
          return (await h.app.tenants.show(id)).key;
        })();
        expect(newKey).not.toBe(key);
        // A clock an hour behind the database's does not make the lease look older, nor younger.
        const taker = replica({ restoreLeaseMs: 1000, now: () => Date.now() - 3_600_000 });
        const early = await taker.restore(actor, archive).catch((e: unknown) => e);
        expect(early).toMatchObject({ code: "tenant_conflict", details: { conflict: true } });

        await new Promise((r) => setTimeout(r, 1300));
        gate.restore(); // the taker writes its objects unhindered
        expect(await taker.restore(actor, archive)).toMatchObject({ id, status: "active", key: newKey });
      } finally {
        gate.kill();
        gate.restore();
      }
      expect(await dying).toBeInstanceOf(Error);
      expect(await h.app.tenants.show(id)).toMatchObject({ status: "active", provisioningStep: null });
      expect(await contents(id)).toEqual(ARCHIVED);
    });

    /** The harness's registry, as a replica whose registry writes (`UPDATE tenantry_tenants`) go through `write`. */
    function registryWith(write: (run: () => Promise<unknown>) => Promise<unknown>) {
      const db = new Proxy(h.app.dbs.admin, {
        get(target, prop) {
          if (prop === "query") {
            return (text: string, params?: readonly unknown[]) =>
              text.includes("UPDATE tenantry_tenants")
                ? write(() => target.query(text, params))
                : target.query(text, params);
          }
          const value = Reflect.get(target, prop, target);
          return typeof value === "function" ? value.bind(target) : value;
        },
      }) as Database;
      const store = new RegistryStore(db);
      return new Proxy(h.app.registry, {
        get(target, prop) {
          if (prop === "store") return store;
          const value = Reflect.get(target, prop, target);
          return typeof value === "function" ? value.bind(target) : value;
        },
      });
    }

    /**
     * Restores `archive` on a replica whose next registry write once the restore waits at an
     * object (a renewal) is committed, after which its connection "dies" before the answer comes
     * back; `meanwhile` runs between the commit and the lost answer. The restore's outcome.
     */
    async function restoreLosingOneReply(archive: string, meanwhile?: () => Promise<void>) {
      let loseReplies = 0;
      const registry = registryWith(async (write) => {
        const result = await write();
        if (loseReplies === 0) return result;
        loseReplies--;
        await meanwhile?.();
        throw new Error("connection lost after the commit");
      });
      const LEASE = 1000; // renewed every 100 ms
      const gate = midRestore();
      try {
        const running = replica({ registry, restoreLeaseMs: LEASE })
          .restore(actor, archive)
          .catch((e: unknown) => e);
        await gate.atObject;
        loseReplies = 1;
        await new Promise((r) => setTimeout(r, 0.4 * LEASE)); // the lost reply, then more renewals
        expect(loseReplies).toBe(0);
        gate.release();
        return await running;
      } finally {
        gate.release();
        gate.restore();
      }
    }

    it("a renewal that landed but whose reply was lost keeps the hold: the restore completes", async () => {
      const id = "lost-reply-co";
      const { archive } = await archived(id);
      expect(await restoreLosingOneReply(archive)).toMatchObject({ id, status: "active" });
      expect(await contents(id)).toEqual(ARCHIVED);
    });

    it("a renewal whose reply was lost, then another's write: the hold is lost, not taken for the holder's", async () => {
      const id = "lost-reply-other-co";
      const { archive } = await archived(id);
      const store = h.app.registry.store; // another writer: not through this replica's registry
      // Before the holder learns anything, another write moves the row on (its nonce stays).
      const outcome = await restoreLosingOneReply(archive, async () => {
        const row = (await store.get(id))!;
        await store.updateIf(id, { version: row.version }, { name: "renamed meanwhile" });
      });
      expect(outcome).toMatchObject({ code: "tenant_conflict", details: { conflict: true } });
    });

    it("a restore cut off from the registry stops writing once its hold may have run out", async () => {
      const id = "cut-off-co";
      const { archive } = await archived(id);
      // This replica's registry writes (its renewals among them) fail once `cutOff` is set; its
      // data writes (rows, objects) still go through, as with a registry on another database.
      let cutOff = false;
      const registry = registryWith((write) =>
        cutOff ? Promise.reject(new Error("registry unreachable")) : write(),
      );
      const LEASE = 1000; // renewed every 100 ms; taken over by others 1 s after the last renewal
      const gate = midRestore();
      let outcome: unknown;
      let key: string | undefined;
      try {
        const cut = replica({ registry, restoreLeaseMs: LEASE })
          .restore(actor, archive)
          .catch((e: unknown) => e);
        await gate.atObject; // rows committed, the first object on its way
        key = (await h.app.tenants.show(id)).key;
        cutOff = true;
        await new Promise((r) => setTimeout(r, 1.3 * LEASE)); // another restore could take over now
        gate.release();
        outcome = await cut;
      } finally {
        cutOff = false;
        gate.release();
        gate.restore();
      }
      expect(outcome).toMatchObject({ code: "tenant_conflict", details: { conflict: true } });
      // The object already on its way when the hold ran out was written; no other one was.
      const written = await h.app.objects.list(storagePrefixForKey(key!), { limit: 100 });
      expect(written.keys.length).toBeLessThanOrEqual(1);
      // Still the restore's (unserved), and any restore may take it over: nothing was left half-active.
      expect((await h.app.tenants.show(id)).status).toBe("provisioning");
      await new Promise((r) => setTimeout(r, 1.1 * LEASE));
      expect(await replica({ restoreLeaseMs: LEASE }).restore(actor, archive)).toMatchObject({
        id,
        status: "active",
      });
      expect(await contents(id)).toEqual(ARCHIVED);
    });

    it("a deprovision is refused while a live restore holds the tenant: it would archive half a restore and mark it deprovisioned under it", async () => {
      const id = "deprov-held-co";
      const { archive } = await archived(id);
      const gate = midRestore();
      try {
        const restoring = h.app.tenants.restore(actor, archive).catch((e: unknown) => e);
        await gate.atObject; // rows written, objects not yet
        const deprovisioned = await replica({})
          .deprovision(actor, id)
          .catch((e: unknown) => e);
        expect(deprovisioned).toMatchObject({ code: "tenant_conflict", details: { conflict: true } });
        expect(await h.app.tenants.show(id)).toMatchObject({
          status: "provisioning",
          provisioningStep: "restoring",
        });
        gate.release();
        expect(await restoring).toMatchObject({ id, status: "active", provisioningStep: null });
      } finally {
        gate.release();
        gate.restore();
      }
      expect(await contents(id)).toEqual(ARCHIVED);
    });

    it("a restore that failed can be deprovisioned (and so purged) without waiting", async () => {
      const id = "deprov-failed-co";
      const { archive } = await archived(id);
      const gate = midRestore();
      try {
        const failing = h.app.tenants.restore(actor, archive).catch((e: unknown) => e);
        await gate.atObject;
        gate.kill();
        expect(await failing).toBeInstanceOf(Error);
      } finally {
        gate.restore();
      }
      expect(await replica({}).deprovision(actor, id)).toMatchObject({ id, status: "deprovisioned" });
    });

    it("a restore that fails in this process lets the tenant go: unserved, not resumed by create, re-run at once", async () => {
      const id = "failed-co";
      const { archive } = await archived(id);
      const gate = midRestore();
      try {
        const failing = h.app.tenants.restore(actor, archive).catch((e: unknown) => e);
        await gate.atObject;
        gate.kill();
        expect(await failing).toBeInstanceOf(Error);
      } finally {
        gate.restore();
      }
      expect((await h.app.tenants.show(id)).status).toBe("provisioning");
      // What an operator sees (admin API, `tenants show`): why it is not served, and what to run.
      const shown = await adminApi(h, await h.adminToken({ sub: "ops" }), "GET", `/tenants/${id}`);
      expect(shown.body).toMatchObject({ id, status: "provisioning", provisioning_step: "restore_failed" });
      const created = await h.app.tenants.create(actor, { id, name: id }).catch((e: unknown) => e);
      expect(isTenantryError(created, "tenant_conflict")).toBe(true);
      // No lease to wait out (5 minutes by default).
      expect(await h.app.tenants.restore(actor, archive)).toMatchObject({ id, status: "active" });
      expect(await contents(id)).toEqual(ARCHIVED);
    });
  });
});
