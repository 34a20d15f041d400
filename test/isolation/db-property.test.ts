import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { ensurePgliteRuntimeRole, runCoreMigrations } from "../../src/db/core-migrations.js";
import type { Databases } from "../../src/db/database.js";
import { openDatabases } from "../../src/db/open.js";
import { DataIsolation } from "../../src/isolation/data-isolation.js";
import { quoteIdent, schemaNameForKey } from "../../src/isolation/names.js";
import type { IsolationName } from "../../src/isolation/strategy.js";
import { RegistryStore } from "../../src/tenancy/registry-store.js";
import type { TenantRecord } from "../../src/tenancy/tenant.js";
import { demoMigrations } from "../../src/tools/demo/index.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";

/**
 * Property: whatever sequence of operations random tenants run through `ctx.db` — with ids chosen
 * to collide under careless mappings, SQL-injection-shaped values, forged tenant_id columns,
 * another tenant's schema named outright, and invalid ids — no tenant ever observes or changes
 * another tenant's rows. Checked against a model after every step.
 */

const pgUp = await serviceGate("postgres");

/** Valid ids that the seed's mappings merged: case, punctuation, 63-byte truncation. */
const TENANT_IDS = [
  "tenant-a",
  "tenanta",
  "tenant_a",
  "org_AbC",
  "org_abc",
  `${"x".repeat(63)}1`,
  `${"x".repeat(63)}2`,
  "a.b:c-d",
];

/** Values a hostile caller would try; all bound as parameters, never spliced. */
const hostileText = fc.oneof(
  fc.constantFrom(
    "'; DROP TABLE notes; --",
    "' OR '1'='1",
    "org_abc",
    "tenant-a",
    "%",
    "\\",
    "$1",
    "\u{1F600}",
    "x'); SELECT set_config('app.tenant_id', 'org_abc', false); --",
  ),
  fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !s.includes("\u0000")),
);

type Op =
  | { kind: "insert"; t: number; title: string }
  | { kind: "list"; t: number }
  | { kind: "update"; t: number; body: string }
  | { kind: "delete"; t: number; title: string }
  | { kind: "forge"; t: number; victim: number }
  | { kind: "invalid"; id: string }
  | { kind: "concurrent"; ops: { t: number; title: string }[] };

const tenantIdx = fc.nat({ max: TENANT_IDS.length - 1 });
const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant("insert" as const), t: tenantIdx, title: hostileText }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("list" as const), t: tenantIdx }) },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant("update" as const), t: tenantIdx, body: hostileText }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant("delete" as const), t: tenantIdx, title: hostileText }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("forge" as const), t: tenantIdx, victim: tenantIdx }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("invalid" as const),
      id: fc.oneof(
        fc.constantFrom("", "a/b", "../org_abc", "org_abc\u0000", "x".repeat(65), "org abc", "tenant-a'"),
        fc.string().filter((s) => !/^[A-Za-z0-9._:-]{1,64}$/.test(s)),
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("concurrent" as const),
      ops: fc.array(fc.record({ t: tenantIdx, title: hostileText }), { minLength: 2, maxLength: 12 }),
    }),
  },
);

interface Target {
  name: string;
  strategy: IsolationName;
  postgres: boolean;
}

const targets: Target[] = [
  { name: "PostgreSQL, row_level_security", strategy: "row_level_security", postgres: true },
  { name: "PostgreSQL, schema_per_tenant", strategy: "schema_per_tenant", postgres: true },
  // "prefix" isolates files by prefix and the database by RLS, exactly as row_level_security.
  { name: "PostgreSQL, prefix", strategy: "prefix", postgres: true },
  { name: "PGlite, row_level_security", strategy: "row_level_security", postgres: false },
  { name: "PGlite, schema_per_tenant", strategy: "schema_per_tenant", postgres: false },
];

describe.each(targets)("no tenant observes another's rows (property), $name", (target) => {
  const run = target.postgres ? describe.skipIf(!pgUp) : describe;
  run("random operations by random tenants", () => {
    let db: TestDatabase | undefined;
    let dbs: Databases;
    let iso: DataIsolation;
    let tenants: TenantRecord[];

    beforeAll(async () => {
      if (target.postgres) db = await createTestDatabase();
      const config = parseConfig(
        db ? { database: { url: db.runtimeUrl, admin_url: db.adminUrl, pool_size: 10 } } : {},
        "test",
        {},
      );
      dbs = await openDatabases(config, { memory: true });
      if (dbs.runtimeRole) await ensurePgliteRuntimeRole(dbs.admin, dbs.runtimeRole);
      await runCoreMigrations(dbs.admin, dbs.runtimeRoleName);
      iso = new DataIsolation(dbs, target.strategy);
      iso.add(demoMigrations);
      await iso.migrateShared();
      const store = new RegistryStore(dbs.admin);
      tenants = [];
      for (const id of TENANT_IDS) {
        const rec = await store.insert({ id, name: id });
        await iso.provisionTenant(rec);
        tenants.push(rec);
      }
      await iso.checkSafety();
    }, 60_000);

    afterAll(async () => {
      await dbs?.close();
      await db?.drop();
    });

    /** One tool call's worth of work, committed on success, rolled back on error. */
    async function call<T>(
      t: TenantRecord,
      fn: (q: ReturnType<DataIsolation["open"]>) => Promise<T>,
    ): Promise<T> {
      const tx = iso.open(t);
      try {
        const v = await fn(tx);
        await tx.finish(true);
        return v;
      } catch (error) {
        await tx.finish(false).catch(() => {});
        throw error;
      }
    }

    async function reset(): Promise<void> {
      // The owner is subject to forced RLS; TRUNCATE is an owner privilege that ignores it.
      if (target.strategy !== "schema_per_tenant") await dbs.admin.query("TRUNCATE notes");
      else
        for (const t of tenants)
          await dbs.admin.query(`TRUNCATE ${quoteIdent(schemaNameForKey(t.key))}.notes`);
    }

    it("holds for every sequence", async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (ops) => {
          await reset();
          const model = new Map<string, string[]>(TENANT_IDS.map((id) => [id, []]));
          const titles = (t: TenantRecord) =>
            call(t, async (q) =>
              (await q.query<{ title: string }>("SELECT title FROM notes")).rows.map((r) => r.title),
            );
          const insert = (t: TenantRecord, title: string) =>
            call(t, (q) => q.query("INSERT INTO notes (title, body) VALUES ($1, $2)", [title, t.id]));

          for (const o of ops) {
            switch (o.kind) {
              case "insert": {
                const t = tenants[o.t]!;
                await insert(t, o.title);
                model.get(t.id)!.push(o.title);
                break;
              }
              case "list": {
                const t = tenants[o.t]!;
                expect((await titles(t)).sort()).toEqual([...model.get(t.id)!].sort());
                break;
              }
              case "update": {
                const t = tenants[o.t]!;
                const r = await call(t, (q) => q.query("UPDATE notes SET body = $1", [o.body]));
                expect(r.rowCount).toBe(model.get(t.id)!.length);
                break;
              }
              case "delete": {
                const t = tenants[o.t]!;
                const r = await call(t, (q) => q.query("DELETE FROM notes WHERE title = $1", [o.title]));
                const mine = model.get(t.id)!;
                const kept = mine.filter((x) => x !== o.title);
                expect(r.rowCount).toBe(mine.length - kept.length);
                model.set(t.id, kept);
                break;
              }
              case "forge": {
                // The attacker names the victim outright: its tenant_id, or its schema.
                const t = tenants[o.t]!;
                const victim = tenants[o.victim]!;
                const table =
                  target.strategy !== "schema_per_tenant"
                    ? "notes"
                    : `${quoteIdent(schemaNameForKey(victim.key))}.notes`;
                const where =
                  target.strategy !== "schema_per_tenant"
                    ? "WHERE tenant_id = $1"
                    : "WHERE $1::text IS NOT NULL";
                const seen = await call(t, (q) =>
                  q.query<{ title: string }>(`SELECT title FROM ${table} ${where}`, [victim.id]),
                );
                expect(seen.rows.map((r) => r.title).sort()).toEqual(
                  victim === t ? [...model.get(t.id)!].sort() : [],
                );
                const forged =
                  target.strategy !== "schema_per_tenant"
                    ? "INSERT INTO notes (tenant_id, title, body) VALUES ($1, 'forged', 'x')"
                    : `INSERT INTO ${table} (title, body) VALUES ('forged' || left($1, 0), 'x')`;
                if (victim !== t) {
                  await expect(call(t, (q) => q.query(forged, [victim.id]))).rejects.toMatchObject({
                    code: "42501",
                  });
                }
                break;
              }
              case "invalid": {
                const fake = { ...tenants[0]!, id: o.id };
                expect(() => iso.open(fake)).toThrow(expect.objectContaining({ code: "invalid_tenant_id" }));
                break;
              }
              case "concurrent": {
                // Own rows only: a subset of what this tenant wrote before or within the batch.
                const allowed = new Map(TENANT_IDS.map((id) => [id, new Set(model.get(id))]));
                for (const { t, title } of o.ops) allowed.get(tenants[t]!.id)!.add(title);
                await Promise.all(
                  o.ops.map(async ({ t, title }) => {
                    const tenant = tenants[t]!;
                    await insert(tenant, title);
                    const seen = await titles(tenant);
                    for (const x of seen) expect(allowed.get(tenant.id)!.has(x)).toBe(true);
                    expect(seen).toContain(title);
                  }),
                );
                for (const { t, title } of o.ops) model.get(tenants[t]!.id)!.push(title);
                break;
              }
            }
          }
          for (const t of tenants) expect((await titles(t)).sort()).toEqual([...model.get(t.id)!].sort());
        }),
        { numRuns: target.postgres ? 40 : 20 },
      );
    }, 120_000);
  });
});
