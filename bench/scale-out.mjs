// npm run bench -- --scale-out: three Tenantry replicas sharing PostgreSQL and Redis, stateless
// sessions, load spread across them. Reports aggregate throughput and, for one tenant whose
// requests go to all three, how close the allowed count is to one global limit.
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { startTestIssuer } from "../dist/testing/index.js";
import { createBenchDatabase } from "./pg-setup.mjs";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const REPLICAS = 3;
const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const LIMIT = Number(process.env.BENCH_LIMIT ?? 6000);
const audience = "https://bench.tenantry.test/mcp";
const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
const body = JSON.stringify({
  jsonrpc: "2.0",
  id: 1,
  method: "tools/call",
  params: { name: "echo", arguments: { text: "hi" } },
});

function startReplica(env) {
  return new Promise((resolve, reject) => {
    const child = fork(here("./servers/tenantry.mjs"), ["echo"], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    });
    child.once("message", (info) => resolve({ child, ...info }));
    child.once("exit", (code) => reject(new Error(`replica exited with ${code}`)));
  });
}

function load(url, requests, connections) {
  return new Promise((resolve, reject) => {
    const child = fork(here("./load.mjs"), [], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
    child.on("message", (r) => {
      if (r === "measuring") return; // the load generator's "counting starts now" signal
      child.kill();
      if (typeof r?.rps === "number") resolve(r);
      else reject(new Error(`unexpected message from the load generator: ${JSON.stringify(r)}`));
    });
    child.send({ url, requests, connections, duration: DURATION, warmup: 0 });
  });
}

const db = await createBenchDatabase();
if (!db) {
  console.error("scale-out needs PostgreSQL on 127.0.0.1:5432");
  process.exit(1);
}
const idp = await startTestIssuer();
const issuerEnv = { issuer: idp.issuer, jwksUri: idp.jwksUri };
const env = {
  BENCH_PG_URL: db.url,
  BENCH_PG_ADMIN_URL: db.adminUrl,
  BENCH_REDIS_URL: process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379",
  BENCH_RL_PREFIX: `tenantry:bench:${process.pid}`,
  BENCH_LIMITED: String(LIMIT),
  BENCH_ISSUER: JSON.stringify(issuerEnv),
};
const replicas = [];
try {
  replicas.push(await startReplica(env)); // the first provisions; the others find the tenants
  for (let i = 1; i < REPLICAS; i++) replicas.push(await startReplica(env));
  const tokens = [];
  for (let i = 0; i < 10; i++)
    tokens.push(await idp.auth0Token({ orgId: `bench-${i}`, audience, sub: `auth0|u${i}` }));
  const limited = await idp.auth0Token({ orgId: "bench-limited", audience, sub: "auth0|limited" });
  const per = Math.max(1, Math.floor(CONNECTIONS / REPLICAS));

  const spread = await Promise.all(
    replicas.map((r) =>
      load(
        `http://127.0.0.1:${r.port}/mcp`,
        tokens.map((t) => ({ method: "POST", headers: { ...headers, authorization: `Bearer ${t}` }, body })),
        per,
      ),
    ),
  );
  const total = spread.reduce((n, r) => n + r.rps, 0);

  const limitedRuns = await Promise.all(
    replicas.map((r) =>
      load(
        `http://127.0.0.1:${r.port}/mcp`,
        [{ method: "POST", headers: { ...headers, authorization: `Bearer ${limited}` }, body }],
        per,
      ),
    ),
  );
  const allowed = limitedRuns.reduce((n, r) => n + (r.statusCodes?.["200"]?.count ?? 0), 0);
  const limitedCount = limitedRuns.reduce((n, r) => n + (r.statusCodes?.["429"]?.count ?? 0), 0);
  // The three generators start one after the other: the tenant's requests span from the first
  // one's start to the last one's end, longer than DURATION. A global limit allows its burst plus
  // what refills over that span.
  const span =
    (Math.max(...limitedRuns.map((r) => r.ended)) - Math.min(...limitedRuns.map((r) => r.started))) / 1000;
  const expected = LIMIT + (LIMIT * span) / 60;

  console.log(
    `\n| scale-out (${REPLICAS} replicas, shared PostgreSQL + Redis, ${per} connections each, ${DURATION}s) | value |`,
  );
  console.log("|---|---:|");
  for (const [i, r] of spread.entries()) console.log(`| replica ${i + 1} req/s | ${Math.round(r.rps)} |`);
  console.log(`| aggregate req/s | ${Math.round(total)} |`);
  console.log(
    `| one tenant at ${LIMIT}/min across all replicas: allowed | ${allowed} (429: ${limitedCount}) |`,
  );
  console.log(`| one global limit would allow over their ${span.toFixed(2)} s | ≤ ${Math.round(expected)} |`);
  console.log(`| accuracy (allowed / one global limit) | ${((allowed / expected) * 100).toFixed(1)} % |`);
} finally {
  for (const r of replicas) r.child.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 1500));
  await idp.close();
  await db.drop();
}
