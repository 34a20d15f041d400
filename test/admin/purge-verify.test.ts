import { cp, open, readFile, rm, truncate, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { markerKey } from "../../src/admin/tenant-service.js";
import { schemaNameForKey, storagePrefixForKey } from "../../src/isolation/names.js";
import type { ArchiveManifest } from "../../src/isolation/tenant-archive.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";
import { adminApi, mcp, toolResult } from "./helpers.js";

const pgUp = await serviceGate("postgres");

/** Each way an archive can fail purge's check, by the tenant it is done to. */
const BROKEN = ["truncated", "flipped", "unlisted", "foreign", "keyless"] as const;

/**
 * After purge the archive is the only copy of a tenant's data, so purge verifies it first (every
 * file's size and sha256 against the manifest, the manifest's tenant) and purges nothing it cannot
 * vouch for. A rows file truncated, a byte of an object flipped, the manifest deleted, another
 * tenant's archive, no archive at all: each such tenant is listed as failed (backend_unavailable,
 * "kept"), stays deprovisioned and unclaimed with every row and object in place, and no
 * `tenant.purge` event is written for it. Put the archive back and the next purge purges it.
 */
describe.each(["row_level_security", "schema_per_tenant"] as const)(
  "purge verifies the archive before erasing (%s, PostgreSQL)",
  (isolation) => {
    describe.skipIf(!pgUp)("purge", () => {
      let db: TestDatabase;
      let h: Harness;
      let su: pg.Client;
      let backups: string;
      const actor = { id: "test" };
      const archives = new Map<string, string>();
      const before = new Map<string, unknown>();

      /** Every row and object of a tenant, read as the superuser behind Tenantry's back. */
      async function snapshot(id: string) {
        const { key } = await h.app.tenants.show(id);
        const r =
          isolation === "schema_per_tenant"
            ? await su.query<{ j: string }>(
                `SELECT to_jsonb(t)::text AS j FROM "${schemaNameForKey(key)}".notes t`,
              )
            : await su.query<{ j: string }>(
                "SELECT to_jsonb(t)::text AS j FROM public.notes t WHERE tenant_id = $1",
                [id],
              );
        const objects: Record<string, string> = {};
        const prefix = storagePrefixForKey(key);
        for (const full of (await h.app.objects.list(prefix, { limit: 1000 })).keys) {
          objects[full.slice(prefix.length)] = Buffer.from((await h.app.objects.get(full))!).toString("hex");
        }
        const marker = (await h.app.objects.get(markerKey(key))) !== undefined;
        return { notes: r.rows.map((x) => x.j).sort(), objects, marker };
      }

      const manifestOf = async (id: string) =>
        JSON.parse(await readFile(join(archives.get(id)!, "manifest.json"), "utf8")) as ArchiveManifest;
      const purgeEvents = async (id: string) =>
        (await h.app.adminServices.auditLog.query({ tenant: id, action: "tenant.purge" })).map(
          (e) => e.outcome,
        );

      beforeAll(async () => {
        db = await createTestDatabase();
        h = await startHarness({
          tenants: BROKEN.map((id) => ({ id })),
          tools: demoTools,
          migrations: demoMigrations,
          config: {
            database: { url: db.runtimeUrl, admin_url: db.adminUrl },
            auth: { multi_tenant: { isolation, registry_cache_ttl_ms: 10 } },
          },
        });
        su = new pg.Client({ connectionString: db.superUrl });
        await su.connect();
        backups = join(h.app.config.lifecycle.archive_dir, "..", "backups");
        for (const id of BROKEN) {
          const token = await h.token(id);
          for (let i = 0; i < 3; i++) {
            toolResult(
              await mcp(h, token, "tools/call", {
                name: "notes_create",
                arguments: { title: `${id} ${i}`, body: `${id}'s note` },
              }),
            );
          }
          for (const key of ["a.txt", "dir/b.txt"]) {
            toolResult(
              await mcp(h, token, "tools/call", {
                name: "documents_put",
                arguments: { key, content: `${id}:${key}` },
              }),
            );
          }
          before.set(id, await snapshot(id));
          const dep = await h.app.tenants.deprovision(actor, id);
          archives.set(id, dep.archivePath!);
          await cp(dep.archivePath!, join(backups, id), { recursive: true });
        }
      }, 120_000);

      afterAll(async () => {
        await su?.end().catch(() => {});
        await h?.close();
        await db?.drop();
      });

      it("a tenant whose archive is damaged, missing or not its own is not purged: failed, kept, retried", async () => {
        // A rows file truncated (a crash before its data reached the disk).
        const notes = (await manifestOf("truncated")).tables.find((t) => t.name === "notes")!;
        await truncate(join(archives.get("truncated")!, notes.file), 10);
        // One byte of an object flipped.
        const object = join(archives.get("flipped")!, (await manifestOf("flipped")).objects[0]!.file);
        const bytes = await readFile(object);
        bytes[0] = bytes[0]! ^ 0xff;
        await writeFile(object, bytes);
        // The manifest deleted.
        await unlink(join(archives.get("unlisted")!, "manifest.json"));
        // Pointing at another tenant's archive, whole and valid.
        await su.query("UPDATE tenantry_tenants SET archive_path = $1 WHERE id = 'foreign'", [
          join(backups, "truncated"),
        ]);
        // No archive at all (no deprovision leaves this; written by hand).
        await su.query("UPDATE tenantry_tenants SET archive_path = NULL WHERE id = 'keyless'");

        const result = await h.app.tenants.purge(actor, { now: true });
        expect(result.purged).toEqual([]);
        expect(result.failed.map((f) => f.id).sort()).toEqual([...BROKEN].sort());
        const why: Record<string, string> = {
          truncated: "does not have the size",
          flipped: "checksum mismatch",
          unlisted: "no readable manifest.json",
          foreign: "is of tenant truncated",
          keyless: "has no archive",
        };
        for (const f of result.failed) {
          expect(f.code, f.id).toBe("backend_unavailable");
          expect(f.message, f.id).toContain(`tenant ${f.id} was not purged`);
          expect(f.message, f.id).toContain(why[f.id]);
          expect(f.message, f.id).toContain("its data was kept");
        }
        for (const id of BROKEN) {
          // Still deprovisioned, the claim released, every row and object in place, no purge event.
          expect(await h.app.tenants.show(id), id).toMatchObject({
            status: "deprovisioned",
            provisioningStep: null,
          });
          expect(await snapshot(id), id).toEqual(before.get(id));
          expect(await purgeEvents(id), id).toEqual([]);
        }

        // The archives put back: the next purge purges them (the one without an archive stays).
        for (const id of ["truncated", "flipped", "unlisted"]) {
          await rm(archives.get(id)!, { recursive: true });
          await cp(join(backups, id), archives.get(id)!, { recursive: true });
        }
        await su.query("UPDATE tenantry_tenants SET archive_path = $1 WHERE id = 'foreign'", [
          archives.get("foreign"),
        ]);
        const keys = new Map<string, string>();
        for (const id of BROKEN) keys.set(id, (await h.app.tenants.show(id)).key);
        const again = await h.app.tenants.purge(actor, { now: true });
        expect(again.purged.map((p) => p.id).sort()).toEqual(["flipped", "foreign", "truncated", "unlisted"]);
        expect(again.failed).toMatchObject([{ id: "keyless", code: "backend_unavailable" }]);
        for (const p of again.purged) {
          await expect(h.app.tenants.show(p.id)).rejects.toMatchObject({ code: "unknown_tenant" });
          expect(
            (await h.app.objects.list(storagePrefixForKey(keys.get(p.id)!), { limit: 10 })).keys,
          ).toEqual([]);
          expect(await purgeEvents(p.id)).toEqual(["ok"]);
        }
        expect(await snapshot("keyless")).toEqual(before.get("keyless"));
      });

      it("an archive of an earlier tenant with the same id (another key) is not this tenant's", async () => {
        // keyless gets a valid archive of its own id, but with the key of an earlier tenant.
        const stale = join(backups, "keyless-stale");
        await cp(join(backups, "keyless"), stale, { recursive: true });
        const m = JSON.parse(await readFile(join(stale, "manifest.json"), "utf8"));
        m.tenant.key = "0".repeat(String(m.tenant.key).length);
        const file = await open(join(stale, "manifest.json"), "w");
        await file.writeFile(JSON.stringify(m));
        await file.close();
        await su.query("UPDATE tenantry_tenants SET archive_path = $1 WHERE id = 'keyless'", [stale]);
        const result = await h.app.tenants.purge(actor, { now: true });
        expect(result.purged).toEqual([]);
        expect(result.failed).toMatchObject([
          { id: "keyless", code: "backend_unavailable", message: expect.stringContaining("another key") },
        ]);
        expect(await snapshot("keyless")).toEqual(before.get("keyless"));

        await su.query("UPDATE tenantry_tenants SET archive_path = $1 WHERE id = 'keyless'", [
          archives.get("keyless"),
        ]);
        expect((await h.app.tenants.purge(actor, { now: true })).purged.map((p) => p.id)).toEqual([
          "keyless",
        ]);
      });

      it("an archive gone for good: only a tenant the operator names in without_archive is purged without it, and the audit log says so", async () => {
        const lost = "lost-archive";
        await h.app.tenants.create(actor, { id: lost, name: lost });
        toolResult(
          await mcp(h, await h.token(lost), "tools/call", {
            name: "notes_create",
            arguments: { title: "t", body: "b" },
          }),
        );
        const dep = await h.app.tenants.deprovision(actor, lost);
        await rm(dep.archivePath!, { recursive: true });
        const { key } = await h.app.tenants.show(lost);
        const admin = await h.adminToken({ sub: "auth0|ops" });

        // Not named, or another tenant named: kept, as before.
        for (const named of [undefined, ["someone-else"]]) {
          const r = await adminApi(h, admin, "POST", "/purge", {
            now: true,
            ...(named ? { without_archive: named } : {}),
          });
          expect(r.status).toBe(200);
          expect(r.body.failed).toMatchObject([{ id: lost, code: "backend_unavailable" }]);
          expect(await h.app.tenants.show(lost)).toMatchObject({ status: "deprovisioned" });
        }
        // A hostile or malformed list is refused before anything is purged.
        for (const bad of [["../x"], "lost-archive", [1]]) {
          const r = await adminApi(h, admin, "POST", "/purge", { now: true, without_archive: bad });
          expect(r.status, JSON.stringify(bad)).toBe(400);
        }
        expect(await h.app.tenants.show(lost)).toMatchObject({ status: "deprovisioned" });

        const r = await adminApi(h, admin, "POST", "/purge", { now: true, without_archive: [lost] });
        expect(r.status).toBe(200);
        expect(r.body).toMatchObject({
          purged: [{ id: lost, archive_path: dep.archivePath, archive_verified: false }],
          failed: [],
        });
        await expect(h.app.tenants.show(lost)).rejects.toMatchObject({ code: "unknown_tenant" });
        const left =
          isolation === "schema_per_tenant"
            ? await su.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [schemaNameForKey(key)])
            : await su.query("SELECT 1 FROM public.notes WHERE tenant_id = $1", [lost]);
        expect(left.rowCount).toBe(0);
        await h.app.audit.flush();
        const [event] = await h.app.adminServices.auditLog.query({ tenant: lost, action: "tenant.purge" });
        expect(event).toMatchObject({
          outcome: "ok",
          userId: "admin:auth0|ops",
          details: {
            archive_verified: false,
            archive_problem: expect.stringContaining("no readable manifest.json"),
          },
        });
      });
    });
  },
);
