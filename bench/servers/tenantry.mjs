// (c) Tenantry with the full pipeline, (d) the same with a tool doing one tenant-scoped query, and
// (d') the same server and query with no tenancy machinery on the data path: a plain pool, a plain
// table (no RLS), the tenant in a WHERE clause, no transaction; (d'p) the same as a named prepared
// statement, as Tenantry's statement cache runs ds's.
// argv[2]: "echo" | "db" | "statement" | "plain". Database: BENCH_PG_URL / BENCH_PG_ADMIN_URL, else embedded PGlite.
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { z } from "zod";
import { defineTool, parseConfig, TenantryApp } from "../../dist/index.js";
import { startTestIssuer } from "../../dist/testing/index.js";

const mode = process.argv[2] ?? "echo";
const tenants = Number(process.env.BENCH_TENANTS ?? 10);
const dir = await mkdtemp(join(tmpdir(), "tenantry-bench-"));
// Replicas share one issuer (started by the orchestrator); a lone server starts its own.
const shared = process.env.BENCH_ISSUER ? JSON.parse(process.env.BENCH_ISSUER) : undefined;
const idp = shared ?? (await startTestIssuer());
const audience = "https://bench.tenantry.test/mcp";
const pgConfig = process.env.BENCH_PG_URL
  ? { url: process.env.BENCH_PG_URL, admin_url: process.env.BENCH_PG_ADMIN_URL, pool_size: 10 }
  : {};
const config = parseConfig(
  {
    server: { host: "127.0.0.1", port: 0, base_url: "https://bench.tenantry.test" },
    auth: { provider: "auth0", issuer: `${idp.issuer}/`, audience, jwks_uri: idp.jwksUri },
    // (a shared issuer passes { issuer, jwksUri } through the environment)
    database: { data_dir: join(dir, "data"), ...pgConfig },
    storage: { root: join(dir, "objects") },
    rate_limit: {
      backend: process.env.BENCH_REDIS_URL ? "redis" : "memory",
      redis_url: process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379",
      key_prefix: process.env.BENCH_RL_PREFIX ?? "tenantry:bench",
      max_in_flight_per_tenant: 0,
    },
    audit: {
      sink: process.env.BENCH_AUDIT ?? "database",
      path: join(dir, "audit.jsonl"),
      ...(process.env.BENCH_FLUSH
        ? { flush_interval_ms: Number(process.env.BENCH_FLUSH), batch_size: 50 }
        : {}),
    },
  },
  "bench",
  {},
);
const app = new TenantryApp(config, { logger: false, memoryDatabase: !pgConfig.url, controlFile: false });
app.tool(
  defineTool({
    name: "echo",
    description: "echo",
    input: z.object({ text: z.string() }),
    run: (input) => ({ echo: input.text }),
  }),
);
app.tool(
  defineTool({
    name: "items",
    description: "one tenant-scoped query",
    input: z.object({ text: z.string() }),
    async run(_input, ctx) {
      const { rows } = await ctx.db.query("SELECT id, title FROM bench_items ORDER BY id LIMIT 5");
      return { rows };
    },
  }),
);
app.tool(
  defineTool({
    name: "items_statement",
    description: "the same tenant-scoped query, as a tool declared transaction: statement",
    input: z.object({ text: z.string() }),
    transaction: "statement",
    async run(_input, ctx) {
      const { rows } = await ctx.db.query("SELECT id, title FROM bench_items ORDER BY id LIMIT 5");
      return { rows };
    },
  }),
);
const plainPool = process.env.BENCH_PG_ADMIN_URL
  ? new pg.Pool({ connectionString: process.env.BENCH_PG_ADMIN_URL, max: 10 })
  : undefined;
// The run drops the database when it ends, which terminates this pool's idle connections: an
// 'error' nobody listens to would crash the server while it shuts down.
plainPool?.on("error", () => {});
app.tool(
  defineTool({
    name: "items_plain",
    description: "the same query, no tenancy machinery",
    input: z.object({ text: z.string() }),
    async run(_input, ctx) {
      const { rows } = await plainPool.query(
        "SELECT id, title FROM bench_items_plain WHERE tenant_id = $1 ORDER BY id LIMIT 5",
        [ctx.tenant.tenantId],
      );
      return { rows };
    },
  }),
);
app.tool(
  defineTool({
    name: "items_plain_prepared",
    description: "the same query, no tenancy machinery, as a named prepared statement",
    input: z.object({ text: z.string() }),
    async run(_input, ctx) {
      const { rows } = await plainPool.query({
        name: "bench_items_plain",
        text: "SELECT id, title FROM bench_items_plain WHERE tenant_id = $1 ORDER BY id LIMIT 5",
        values: [ctx.tenant.tenantId],
      });
      return { rows };
    },
  }),
);
app.migrations([
  {
    version: 1,
    name: "bench_items",
    tenantTables: ["bench_items"],
    sql: "CREATE TABLE IF NOT EXISTS bench_items (id bigserial PRIMARY KEY, title text NOT NULL)",
  },
]);
const { port } = await app.listen({ port: 0, host: "127.0.0.1" });
// Several replicas may share one database: the first provisions, the others find the tenants there.
async function ensureTenant(id, rateLimit, seed) {
  try {
    await app.tenants.create({ id: "bench" }, { id, name: id, rateLimit });
  } catch (error) {
    if (error.code === "tenant_exists") return;
    throw error;
  }
  if (seed) {
    const tx = app.isolation.open(await app.tenants.show(id));
    await tx.query("INSERT INTO bench_items (title) SELECT 'item ' || g FROM generate_series(1, 20) g");
    await tx.finish(true);
  }
}
const tokens = [];
for (let i = 0; i < tenants; i++) {
  const id = `bench-${i}`;
  await ensureTenant(id, 1_000_000_000, true);
  if (!shared) tokens.push(await idp.auth0Token({ orgId: id, audience, sub: `auth0|user-${i}` }));
}
// The plain table d' reads: the same rows per tenant, no RLS, an index leading with tenant_id.
if (plainPool) {
  await plainPool.query(`CREATE TABLE IF NOT EXISTS bench_items_plain (
    id bigserial PRIMARY KEY, tenant_id text NOT NULL, title text NOT NULL)`);
  await plainPool.query(
    "CREATE INDEX IF NOT EXISTS bench_items_plain_tenant ON bench_items_plain (tenant_id)",
  );
  const { rows } = await plainPool.query("SELECT count(*)::int AS n FROM bench_items_plain");
  if (rows[0].n === 0) {
    await plainPool.query(
      `INSERT INTO bench_items_plain (tenant_id, title)
       SELECT 'bench-' || t, 'item ' || g FROM generate_series(0, $1 - 1) t, generate_series(1, 20) g`,
      [tenants],
    );
  }
}
let limitedToken;
if (process.env.BENCH_LIMITED) {
  await ensureTenant("bench-limited", Number(process.env.BENCH_LIMITED), false);
  if (!shared)
    limitedToken = await idp.auth0Token({ orgId: "bench-limited", audience, sub: "auth0|limited" });
}
const tool = { echo: "echo", db: "items", statement: "items_statement", plain: "items_plain" }[mode];
process.send?.({ port, tokens, limitedToken, tool });
process.on("SIGTERM", async () => {
  await app.close();
  await plainPool?.end();
  if (!shared) await idp.close();
  process.exit(0);
});
