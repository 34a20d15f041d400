import { cp, readFile, stat, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { markerKey } from "../../src/admin/tenant-service.js";
import { schemaNameForKey, storagePrefixForKey } from "../../src/isolation/names.js";
import { TenantStorage } from "../../src/isolation/storage/tenant-storage.js";
import { readArchive } from "../../src/isolation/tenant-archive.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";
import { adminApi, mcp, tagAdd, tagMigrations, toolResult } from "./helpers.js";

const pgUp = await serviceGate("postgres");
const TENANTS = ["acme", "globex", "Org_AbC"];
const TABLES = ["note_tags", "notes"];

interface Snapshot {
  rows: Record<string, string[]>;
  objects: Record<string, string>;
}

describe.each(["row_level_security", "schema_per_tenant"] as const)(
  "deprovision → purge → restore (%s, PostgreSQL)",
  (isolation) => {
    describe.skipIf(!pgUp)("lifecycle", () => {
      let db: TestDatabase;
      let h: Harness;
      let su: pg.Client;
      let admin: string;
      const before = new Map<string, Snapshot>();

      /** Everything a tenant has, read as the superuser behind Tenantry's back. */
      async function snapshot(id: string, key?: string): Promise<Snapshot> {
        const k = key ?? (await h.app.tenants.show(id)).key;
        const rows: Record<string, string[]> = {};
        for (const table of TABLES) {
          const sql =
            isolation === "schema_per_tenant"
              ? `SELECT to_jsonb(t)::text AS j FROM "${schemaNameForKey(k)}".${table} t`
              : `SELECT to_jsonb(t)::text AS j FROM public.${table} t WHERE tenant_id = $1`;
          const r = await su.query<{ j: string }>(sql, isolation === "schema_per_tenant" ? [] : [id]);
          rows[table] = r.rows.map((x) => x.j).sort();
        }
        return { rows, objects: await objectsUnder(storagePrefixForKey(k)) };
      }

      async function objectsUnder(prefix: string): Promise<Record<string, string>> {
        const out: Record<string, string> = {};
        let cursor: string | undefined;
        do {
          const page = await h.app.objects.list(prefix, cursor ? { cursor, limit: 1000 } : { limit: 1000 });
          for (const key of page.keys) {
            out[key.slice(prefix.length)] = Buffer.from((await h.app.objects.get(key))!).toString("hex");
          }
          cursor = page.nextCursor;
        } while (cursor);
        return out;
      }

      async function populate(id: string) {
        const token = await h.token(id);
        for (let i = 0; i < 3; i++) {
          const { note } = toolResult<{ note: { id: string } }>(
            await mcp(h, token, "tools/call", {
              name: "notes_create",
              arguments: { title: `${id} note ${i}`, body: `body ${i} of ${id} — ünïcødé ✓` },
            }),
          );
          for (const tag of ["red", "blue"]) {
            toolResult(
              await mcp(h, token, "tools/call", {
                name: "tag_add",
                arguments: { note_id: note.id, tag, weight: "12345678901234567890.123456789" },
              }),
            );
          }
        }
        for (const key of ["a.txt", "dir/b.txt", "dir/sub/c.txt"]) {
          toolResult(
            await mcp(h, token, "tools/call", {
              name: "documents_put",
              arguments: { key, content: `${id}:${key}` },
            }),
          );
        }
        const record = await h.app.tenants.show(id);
        await TenantStorage.forKey(h.app.objects, record.key).put(
          "bin/raw",
          new Uint8Array(Array.from({ length: 256 }, (_, i) => i)),
        );
      }

      beforeAll(async () => {
        db = await createTestDatabase();
        h = await startHarness({
          tenants: TENANTS.map((id) => ({ id })),
          tools: [...demoTools, tagAdd],
          migrations: [...demoMigrations, ...tagMigrations],
          config: {
            database: { url: db.runtimeUrl, admin_url: db.adminUrl },
            auth: { multi_tenant: { isolation, registry_cache_ttl_ms: 50 } },
            lifecycle: { retention_days: 30 },
          },
        });
        su = new pg.Client({ connectionString: db.superUrl });
        await su.connect();
        admin = await h.adminToken({ sub: "auth0|ops" });
        for (const id of TENANTS) await populate(id);
        for (const id of TENANTS) before.set(id, await snapshot(id));
      }, 120_000);

      afterAll(async () => {
        await su?.end().catch(() => {});
        await h?.close();
        await db?.drop();
      });

      let archive = "";
      let oldKey = "";

      it("deprovision suspends the tenant at once and archives exactly what it had", async () => {
        oldKey = (await h.app.tenants.show("acme")).key;
        const started = Date.now();
        const r = await adminApi(h, admin, "POST", "/tenants/acme/deprovision");
        expect(r.status).toBe(200);
        expect(r.body).toMatchObject({ id: "acme", status: "deprovisioned" });
        archive = r.body.archive_path as string;
        expect(archive.startsWith(h.app.config.lifecycle.archive_dir)).toBe(true);
        expect(basename(archive)).toMatch(/^acme-\d{8}T\d{9}Z$/);
        const purgeAfter = Date.parse(r.body.purge_after as string);
        expect(purgeAfter - started).toBeGreaterThan(30 * 86_400_000 - 60_000);
        expect(purgeAfter - Date.now()).toBeLessThanOrEqual(30 * 86_400_000);

        const refused = await mcp(h, await h.token("acme"), "tools/list");
        expect(refused.status).toBe(403);
        expect(refused.body.error).toBe("tenant_deprovisioned");

        // The archive verifies, and holds exactly the tenant's rows and objects.
        const manifest = await readArchive(archive);
        expect(manifest).toMatchObject({
          format: 1,
          strategy: isolation,
          tenant: { id: "acme", name: "acme" },
        });
        const mine = before.get("acme")!;
        expect(Object.fromEntries(manifest.tables.map((t) => [t.name, t.rows]))).toEqual({
          notes: 3,
          note_tags: 6,
        });
        for (const t of manifest.tables) {
          const lines = (await readFile(join(archive, t.file), "utf8")).split("\n").filter(Boolean).sort();
          expect(lines).toEqual(mine.rows[t.name]);
        }
        const objects: Record<string, string> = {};
        for (const o of manifest.objects)
          objects[o.key] = (await readFile(join(archive, o.file))).toString("hex");
        expect(objects).toEqual(mine.objects);
        expect(Object.keys(objects).sort()).toEqual(["a.txt", "bin/raw", "dir/b.txt", "dir/sub/c.txt"]);

        // Deprovisioned, not yet purged: the data is still in place.
        expect(await snapshot("acme")).toEqual(mine);
      });

      it("purge waits for the retention; --now removes every row, schema and object of that tenant and nothing else", async () => {
        expect((await adminApi(h, admin, "POST", "/purge", {})).body).toEqual({ purged: [], failed: [] });
        const r = await adminApi(h, admin, "POST", "/purge", { now: true });
        expect(r.body).toMatchObject({ purged: [{ id: "acme", archive_path: archive }], failed: [] });

        await expect(h.app.tenants.show("acme")).rejects.toMatchObject({ code: "unknown_tenant" });
        for (const table of TABLES) {
          const left = await su
            .query(`SELECT count(*)::int AS n FROM public.${table} WHERE tenant_id = 'acme'`)
            .catch(() => ({
              rows: [{ n: 0 }],
            }));
          expect(left.rows[0].n).toBe(0);
        }
        const schema = await su.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [
          schemaNameForKey(oldKey),
        ]);
        expect(schema.rowCount).toBe(0);
        const migrations = await su.query("SELECT 1 FROM tenantry_migrations WHERE scope LIKE $1", [
          `%${schemaNameForKey(oldKey)}`,
        ]);
        expect(migrations.rowCount).toBe(0);
        expect(await objectsUnder(storagePrefixForKey(oldKey))).toEqual({});
        expect(await h.app.objects.get(markerKey(oldKey))).toBeUndefined();

        for (const id of TENANTS.filter((t) => t !== "acme"))
          expect(await snapshot(id)).toEqual(before.get(id));
        expect((await stat(join(archive, "manifest.json"))).isFile()).toBe(true);

        await h.app.audit.flush();
        const log = await h.app.adminServices.auditLog.query({ tenant: "acme", action: "tenant.purge" });
        expect(log).toHaveLength(1);
        expect(log[0]).toMatchObject({
          userId: "admin:auth0|ops",
          details: { archive_path: archive, forced: true },
        });
      });

      it("restore brings back exactly the archived data, under a new key, and the tenant works again", async () => {
        const outside = await adminApi(h, admin, "POST", "/restore", { archive: "/etc" });
        expect(outside).toMatchObject({ status: 400, body: { error: "invalid_argument" } });

        const r = await adminApi(h, admin, "POST", "/restore", { archive: basename(archive) });
        expect(r.status).toBe(200);
        expect(r.body).toMatchObject({ id: "acme", status: "active", purge_after: null });
        const record = await h.app.tenants.show("acme");
        expect(record.key).not.toBe(oldKey);
        expect(await snapshot("acme")).toEqual(before.get("acme"));
        for (const id of TENANTS.filter((t) => t !== "acme"))
          expect(await snapshot(id)).toEqual(before.get(id));

        const token = await h.token("acme");
        const listed = toolResult<{ notes: { title: string }[] }>(
          await mcp(h, token, "tools/call", { name: "notes_list", arguments: {} }),
        );
        expect(listed.notes.map((n) => n.title).sort()).toEqual([
          "acme note 0",
          "acme note 1",
          "acme note 2",
        ]);
        const doc = toolResult(
          await mcp(h, token, "tools/call", { name: "documents_get", arguments: { key: "dir/sub/c.txt" } }),
        );
        expect(doc).toMatchObject({ content: "acme:dir/sub/c.txt" });
        // Sequences were moved past the restored ids: new rows do not collide.
        const { note } = toolResult<{ note: { id: string } }>(
          await mcp(h, token, "tools/call", {
            name: "notes_create",
            arguments: { title: "after", body: "restore" },
          }),
        );
        const tag = toolResult<{ id: number }>(
          await mcp(h, token, "tools/call", {
            name: "tag_add",
            arguments: { note_id: note.id, tag: "new", weight: "1" },
          }),
        );
        expect(tag.id).toBeGreaterThan(0);

        const again = await adminApi(h, admin, "POST", "/restore", { archive: basename(archive) });
        expect(again).toMatchObject({ status: 409, body: { error: "tenant_exists" } });
      });

      it("an archive that fails its checksums, or names another tenant's rows, restores nothing", async () => {
        const dep = await h.app.tenants.deprovision({ id: "test" }, "globex");
        await h.app.tenants.purge({ id: "test" }, { now: true });
        const good = dep.archivePath!;

        const tampered = `${good}-tampered`;
        await cp(good, tampered, { recursive: true });
        const manifest = JSON.parse(await readFile(join(tampered, "manifest.json"), "utf8"));
        const notes = manifest.tables.find((t: { name: string }) => t.name === "notes");
        const file = join(tampered, notes.file);
        await writeFile(file, (await readFile(file, "utf8")).replace("globex note 1", "globex note X"));
        await expect(h.app.tenants.restore({ id: "test" }, tampered)).rejects.toMatchObject({
          code: "invalid_argument",
          message: expect.stringContaining("checksum mismatch"),
        });
        await expect(h.app.tenants.show("globex")).rejects.toMatchObject({ code: "unknown_tenant" });

        if (isolation === "row_level_security") {
          // Re-signed, but its rows claim to be acme's: refused, and the tenant is left unserved.
          const forged = `${good}-forged`;
          await cp(good, forged, { recursive: true });
          const m = JSON.parse(await readFile(join(forged, "manifest.json"), "utf8"));
          const { createHash } = await import("node:crypto");
          for (const t of m.tables) {
            const f = join(forged, t.file);
            const text = (await readFile(f, "utf8")).replaceAll(
              '"tenant_id": "globex"',
              '"tenant_id": "acme"',
            );
            await writeFile(f, text);
            t.sha256 = createHash("sha256").update(text).digest("hex");
            t.bytes = Buffer.byteLength(text);
          }
          await writeFile(join(forged, "manifest.json"), JSON.stringify(m));
          await expect(h.app.tenants.restore({ id: "test" }, forged)).rejects.toMatchObject({
            code: "invalid_argument",
            message: expect.stringContaining("another tenant"),
          });
          expect((await h.app.tenants.show("globex")).status).toBe("provisioning");
          expect((await mcp(h, await h.token("globex"), "tools/list")).status).toBe(403);
          const acmeNotes = await su.query(
            "SELECT count(*)::int AS n FROM public.notes WHERE tenant_id = 'acme'",
          );
          expect(acmeNotes.rows[0].n).toBe(4);
        }

        // The untouched archive still restores (resuming a failed restore if there was one).
        await h.app.tenants.restore({ id: "test" }, good);
        expect(await snapshot("globex")).toEqual(before.get("globex"));
      });

      it("restoring a tenant that was deprovisioned but not purged replaces its data with the archive's", async () => {
        const id = "Org_AbC";
        const key = (await h.app.tenants.show(id)).key;
        const dep = await h.app.tenants.deprovision({ id: "test" }, id);
        // Data drifts after the archive (say, a late write): restore puts back the archived state.
        const extra = isolation === "schema_per_tenant" ? `"${schemaNameForKey(key)}".notes` : "public.notes";
        await su.query(
          `INSERT INTO ${extra} (title, body${isolation === "schema_per_tenant" ? "" : ", tenant_id"}) VALUES ('late', 'x'${
            isolation === "schema_per_tenant" ? "" : ", 'Org_AbC'"
          })`,
        );
        const restored = await h.app.tenants.restore({ id: "test" }, dep.archivePath!);
        expect(restored).toMatchObject({ status: "active", key });
        expect(await snapshot(id)).toEqual(before.get(id));
      });

      it("the purge job purges deprovisioned tenants once their retention has passed", async () => {
        const dep = await h.app.tenants.deprovision({ id: "test" }, "Org_AbC");
        await h.app.adminServices.purgeJob.runOnce();
        expect((await h.app.tenants.show("Org_AbC")).status).toBe("deprovisioned");
        await su.query(
          "UPDATE tenantry_tenants SET purge_after = now() - interval '1 minute' WHERE id = 'Org_AbC'",
        );
        await h.app.adminServices.purgeJob.runOnce();
        await expect(h.app.tenants.show("Org_AbC")).rejects.toMatchObject({ code: "unknown_tenant" });
        expect(await objectsUnder(storagePrefixForKey(dep.key))).toEqual({});
        expect(await snapshot("globex")).toEqual(before.get("globex"));
      });
    });
  },
);
