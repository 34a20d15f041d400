// npm run bench [-- --quick] [-- --scale-out]
// One run, one table: each server in its own process, load from a separate autocannon process,
// the same concurrency for all; ratios printed side by side.
import { fork } from "node:child_process";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { createBenchDatabase } from "./pg-setup.mjs";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const args = new Set(process.argv.slice(2));
if (args.has("--scale-out")) {
  await import("./scale-out.mjs");
  process.exit(0);
}
const quick = args.has("--quick");
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const DURATION = Number(process.env.BENCH_DURATION ?? (quick ? 3 : 10));
const WARMUP = quick ? 1 : 3;

const callBody = (tool) =>
  JSON.stringify({
    jsonrpc: "2.0",
    id: 1,
    method: "tools/call",
    params: { name: tool, arguments: { text: "hello" } },
  });

function startServer(script, argv = [], env = {}) {
  return new Promise((resolve, reject) => {
    const child = fork(here(script), argv, {
      env: { ...process.env, ...env },
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    });
    child.once("message", (info) => resolve({ child, ...info }));
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code}`)));
  });
}

async function stop(server) {
  server.child.removeAllListeners("exit");
  const exited = new Promise((r) => server.child.once("exit", r));
  server.child.kill("SIGTERM");
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  server.child.kill("SIGKILL");
}

function load(job) {
  return new Promise((resolve, reject) => {
    const child = fork(here("./load.mjs"), [], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
    child.once("message", (r) => {
      child.kill();
      resolve(r);
    });
    child.once("exit", (code) => code && reject(new Error(`load exited with ${code}`)));
    child.send({ connections: CONNECTIONS, duration: DURATION, warmup: WARMUP, ...job });
  });
}

const mcpHeaders = { "content-type": "application/json", accept: "application/json, text/event-stream" };

async function measure(label, script, argv, env, makeRequests) {
  const server = await startServer(script, argv, env);
  try {
    const result = await load({ url: `http://127.0.0.1:${server.port}/mcp`, requests: makeRequests(server) });
    process.stderr.write(
      `  ${label}: ${Math.round(result.rps)} req/s (errors ${result.errors}, non-2xx ${result.non2xx})\n`,
    );
    return result;
  } finally {
    await stop(server);
  }
}

const rows = [];
const fmt = (n, digits = 0) =>
  n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const db = await createBenchDatabase();
const pgEnv = db ? { BENCH_PG_URL: db.url, BENCH_PG_ADMIN_URL: db.adminUrl } : {};
process.stderr.write(
  `bench: ${cpus().length} cores, ${cpus()[0]?.model}; node ${process.version}; ${CONNECTIONS} connections, ${DURATION}s per run; database: ${db ? "PostgreSQL" : "embedded PGlite"}\n`,
);
try {
  const a = await measure("a bare", "./servers/bare.mjs", [], {}, () => [
    { method: "POST", headers: mcpHeaders, body: callBody("echo") },
  ]);
  const b = await measure("b sdk", "./servers/sdk.mjs", [], {}, () => [
    { method: "POST", headers: mcpHeaders, body: callBody("echo") },
  ]);
  const tenantRequests = (s) =>
    s.tokens.map((t) => ({
      method: "POST",
      headers: { ...mcpHeaders, authorization: `Bearer ${t}` },
      body: callBody(s.tool),
    }));
  const c = await measure("c tenantry", "./servers/tenantry.mjs", ["echo"], pgEnv, tenantRequests);
  rows.push(
    ["a  bare node:http JSON-RPC", a],
    ["b  official SDK, stateless", b],
    ["c  Tenantry, full pipeline", c],
  );
  let d;
  let dPlain;
  if (db) {
    d = await measure("d tenantry+query", "./servers/tenantry.mjs", ["db"], pgEnv, tenantRequests);
    dPlain = await measure("d-plain", "./servers/plain-db.mjs", [], pgEnv, () =>
      Array.from({ length: 10 }, (_, i) => ({
        method: "POST",
        headers: { ...mcpHeaders, "x-tenant": `bench-${i}` },
        body: callBody("items"),
      })),
    );
    rows.push(["d  Tenantry + tenant-scoped query", d], ["d' same query, no tenancy", dPlain]);
  }

  console.log("\n| server | req/s | p50 ms | p99 ms | errors |");
  console.log("|---|---:|---:|---:|---:|");
  for (const [name, r] of rows)
    console.log(`| ${name} | ${fmt(r.rps)} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${r.errors + r.non2xx} |`);
  const ratio = (x, y) => (y > 0 ? x / y : Number.NaN);
  console.log("\n| ratio | value | target |");
  console.log("|---|---:|---|");
  console.log(`| c/b throughput | ${fmt(ratio(c.rps, b.rps), 2)}× | ≥ 8× |`);
  console.log(`| c/a throughput | ${fmt(ratio(c.rps, a.rps) * 100, 1)} % | ≥ 50 % |`);
  console.log(`| p99 c / p99 a | ${fmt(ratio(c.p99, a.p99), 2)}× | ≤ 2× |`);
  if (d && dPlain) console.log(`| d/d' throughput | ${fmt(ratio(d.rps, dPlain.rps) * 100, 1)} % | ≥ 90 % |`);

  const tenantCosts = await new Promise((resolve, reject) => {
    const child = fork(here("./tenants.mjs"), [], {
      execArgv: ["--expose-gc"],
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    });
    child.once("message", resolve);
    child.once("exit", (code) => code && reject(new Error(`tenants bench exited with ${code}`)));
  });
  console.log("\n| per-tenant cost | value | target |");
  console.log("|---|---:|---|");
  console.log(
    `| registry cache + limiter memory per idle tenant (${tenantCosts.mem.cached.toLocaleString("en-US")} tenants) | ${fmt(tenantCosts.mem.perTenant)} B | ≤ 1024 B |`,
  );
  console.log(`| provisioning, row_level_security | ${fmt(tenantCosts.rls, 2)} ms/tenant | ≤ 10 ms |`);
  console.log(`| provisioning, schema_per_tenant | ${fmt(tenantCosts.schema, 2)} ms/tenant | reported |`);
} finally {
  await db?.drop();
}
