// Per-tenant costs: registry cache + limiter memory per idle tenant (10,000 tenants), and
// provisioning time under row_level_security and schema_per_tenant. Run with --expose-gc.
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig, TenantryApp } from "../dist/index.js";
import { createBenchDatabase } from "./pg-setup.mjs";

const gc = globalThis.gc ?? (() => {});
const TENANTS = Number(process.env.BENCH_IDLE_TENANTS ?? 10_000);

async function makeApp(isolation, db) {
  const dir = await mkdtemp(join(tmpdir(), "tenantry-bench-tenants-"));
  const config = parseConfig(
    {
      auth: { provider: "dev" },
      database: { data_dir: join(dir, "data"), ...(db ? { url: db.url, admin_url: db.adminUrl } : {}) },
      storage: { root: join(dir, "objects") },
      audit: { sink: "database" },
    },
    "bench",
    {},
  );
  config.auth.multi_tenant.isolation = isolation;
  const app = new TenantryApp(config, { logger: false, memoryDatabase: !db, controlFile: false });
  app.migrations([
    {
      version: 1,
      name: "bench_items",
      tenantTables: ["bench_items"],
      sql: "CREATE TABLE IF NOT EXISTS bench_items (id bigserial PRIMARY KEY, title text NOT NULL)",
    },
  ]);
  await app.start();
  return app;
}

async function provisioning(isolation, count) {
  const db = await createBenchDatabase();
  const app = await makeApp(isolation, db);
  try {
    for (let i = 0; i < 5; i++) await app.tenants.create({ id: "bench" }, { id: `warm-${i}`, name: "warm" });
    const t0 = performance.now();
    for (let i = 0; i < count; i++)
      await app.tenants.create({ id: "bench" }, { id: `p-${i}`, name: `p ${i}` });
    return (performance.now() - t0) / count;
  } finally {
    await app.close();
    await db?.drop();
  }
}

async function idleMemory() {
  const db = await createBenchDatabase();
  const app = await makeApp("row_level_security", db);
  try {
    await app.dbs.admin.query(
      `INSERT INTO tenantry_tenants (id, key, name, status)
       SELECT 'idle-' || g, to_hex(nextval('tenantry_tenant_key_seq')), 'Idle tenant ' || g, 'active'
         FROM generate_series(1, $1) g`,
      [TENANTS],
    );
    // Warm code paths so that what we measure is per-tenant state, not JIT or first-use allocations.
    for (let i = 1; i <= 50; i++) {
      await app.registry.get(`idle-${i}`);
      await app.limiter.check(`idle-${i}`, 100);
    }
    app.registry.invalidate();
    gc();
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 1; i <= TENANTS; i++) {
      await app.registry.get(`idle-${i}`);
      await app.limiter.check(`idle-${i}`, 100);
    }
    gc();
    gc();
    const after = process.memoryUsage().heapUsed;
    return { perTenant: (after - before) / TENANTS, cached: app.registry.size };
  } finally {
    await app.close();
    await db?.drop();
  }
}

const mem = await idleMemory();
const rls = await provisioning("row_level_security", 200);
const schema = await provisioning("schema_per_tenant", 50);
process.send?.({ mem, rls, schema }) ?? console.log({ mem, rls, schema });
