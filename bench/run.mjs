// npm run bench [-- --quick] [-- --scale-out]
// One run, one table. Every server runs in its own process and stays up for the whole run; load
// comes from a separate autocannon process with the same concurrency for all. The servers are
// measured in turn, round after round, so that a slower or busier minute of a shared machine falls
// on all of them alike; each figure is the median over the rounds, each ratio the median of the
// per-round ratios. A first, uncounted round warms every server up.
import { fork } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
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
const DURATION = Number(process.env.BENCH_DURATION ?? (quick ? 2 : 5));
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? (quick ? 1 : 3));
const WARMUP = 1;
/** Seconds per server of the uncounted first round. */
const WARMUP_ROUND = quick ? 1 : 3;

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

/**
 * CPU time of processes, from /proc (Linux; elsewhere `undefined` and the CPU table is left out):
 * utime + stime in clock ticks of 10 ms (USER_HZ is 100 on Linux).
 */
const TICK_US = 10_000;
function cpuTicks(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined;
  }
}
/** CPU ticks of every local PostgreSQL process (backends, WAL writer, checkpointer…), by pid. */
function postgresTicks() {
  const ticks = new Map();
  try {
    for (const pid of readdirSync("/proc")) {
      if (!/^\d+$/.test(pid)) continue;
      try {
        if (readFileSync(`/proc/${pid}/comm`, "utf8").startsWith("postgres"))
          ticks.set(pid, cpuTicks(pid) ?? 0);
      } catch {
        // the process ended
      }
    }
  } catch {
    return undefined;
  }
  return ticks;
}

/** Ticks used between two samples; a process started in between counts from zero. */
function ticksBetween(start, end) {
  if (start === undefined || end === undefined) return undefined;
  if (!(start instanceof Map)) return end - start;
  let total = 0;
  for (const [pid, t] of end) total += t - (start.get(pid) ?? 0);
  return total;
}

/**
 * Runs the load generator against one server. With `server`, also measures the CPU time the
 * server, the load generator and PostgreSQL used during the counted run, per request (µs).
 */
function load(job, server) {
  return new Promise((resolve, reject) => {
    const child = fork(here("./load.mjs"), [], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
    let start;
    const sample = () => ({
      server: cpuTicks(server?.child.pid),
      load: cpuTicks(child.pid),
      pg: postgresTicks(),
    });
    child.on("message", (m) => {
      if (m === "measuring") {
        start = sample();
        return;
      }
      const end = sample();
      child.kill();
      const per = (k) => {
        const used = ticksBetween(start?.[k], end[k]);
        return used !== undefined && m.total > 0 ? (used * TICK_US) / m.total : undefined;
      };
      resolve({
        ...m,
        cpu: server ? { server: per("server"), load: per("load"), pg: per("pg") } : undefined,
      });
    });
    child.once("exit", (code) => code && reject(new Error(`load exited with ${code}`)));
    child.send({ connections: CONNECTIONS, duration: DURATION, warmup: WARMUP, ...job });
  });
}

const mcpHeaders = { "content-type": "application/json", accept: "application/json, text/event-stream" };
const median = (xs) => {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  if (s.length === 0) return Number.NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmt = (n, digits = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : "n/a";

const db = await createBenchDatabase();
const pgEnv = db ? { BENCH_PG_URL: db.url, BENCH_PG_ADMIN_URL: db.adminUrl } : {};
process.stderr.write(
  `bench: ${cpus().length} cores, ${cpus()[0]?.model}; node ${process.version}; ${CONNECTIONS} connections; ` +
    `${ROUNDS} round(s) of ${DURATION} s per server; database: ${db ? "PostgreSQL" : "embedded PGlite"}\n`,
);
const servers = [];
try {
  const bare = await startServer("./servers/bare.mjs");
  servers.push(bare);
  const sdk = await startServer("./servers/sdk.mjs");
  servers.push(sdk);
  const tenantry = await startServer("./servers/tenantry.mjs", ["echo"], pgEnv);
  servers.push(tenantry);
  const plainHttp = db ? await startServer("./servers/plain-db.mjs", [], pgEnv) : undefined;
  if (plainHttp) servers.push(plainHttp);

  const url = (s) => `http://127.0.0.1:${s.port}/mcp`;
  // Every server gets the same requests, byte for byte: the ten clients' requests, each with its
  // client's bearer token, as MCP clients of a server that requires authorization send them. a and
  // b ignore the header, but receiving it is part of the work of answering such a client. a₀ is a
  // reference: the bare server on the same call without the header (~240 bytes instead of ~1,000).
  const asClients = (tool) =>
    tenantry.tokens.map((t) => ({
      method: "POST",
      headers: { ...mcpHeaders, authorization: `Bearer ${t}` },
      body: callBody(tool),
    }));
  const withoutToken = [{ method: "POST", headers: mcpHeaders, body: callBody("echo") }];
  const rows = [
    ["a", "bare node:http JSON-RPC", url(bare), asClients("echo"), bare],
    [
      "a₀",
      "bare node:http JSON-RPC, the request without its bearer token (reference)",
      url(bare),
      withoutToken,
      bare,
    ],
    ["b", "official SDK, stateless", url(sdk), asClients("echo"), sdk],
    ["c", "Tenantry, full pipeline", url(tenantry), asClients("echo"), tenantry],
  ];
  if (db) {
    rows.push(
      [
        "d",
        "Tenantry + one tenant-scoped query (per-call transaction)",
        url(tenantry),
        asClients("items"),
        tenantry,
      ],
      [
        "ds",
        "Tenantry + the same query, transaction: statement",
        url(tenantry),
        asClients("items_statement"),
        tenantry,
      ],
      ["d'", "Tenantry + the same query, no tenancy", url(tenantry), asClients("items_plain"), tenantry],
      [
        "d'p",
        "Tenantry + the same query, no tenancy, a prepared statement (reference)",
        url(tenantry),
        asClients("items_plain_prepared"),
        tenantry,
      ],
      [
        "d''",
        "bare node:http + the same query (reference)",
        url(plainHttp),
        Array.from({ length: 10 }, (_, i) => ({
          method: "POST",
          headers: { ...mcpHeaders, "x-tenant": `bench-${i}` },
          body: callBody("items"),
        })),
        plainHttp,
      ],
    );
  }

  // One round that is not counted: every server's code gets optimised before anything is measured.
  for (const [key, , target, requests] of rows) {
    await load({ url: target, requests, duration: WARMUP_ROUND, warmup: 0 });
    process.stderr.write(`  warm-up ${key}\n`);
  }
  /** results[key] = one result per round */
  const results = Object.fromEntries(rows.map(([key]) => [key, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [key, , target, requests, server] of rows) {
      const r = await load({ url: target, requests }, server);
      results[key].push(r);
      const statuses = Object.entries(r.statusCodes ?? {})
        .filter(([code]) => !code.startsWith("2"))
        .map(([code, { count }]) => `${code}: ${count}`);
      process.stderr.write(
        `  round ${round} ${key}: ${fmt(r.rps)} req/s, p99 ${fmt(r.p99, 2)} ms (errors ${r.errors}, non-2xx ${r.non2xx}${statuses.length ? `; ${statuses.join(", ")}` : ""})\n`,
      );
    }
  }
  // p99 "at the same load": a and c at one fixed rate both sustain (half of c's throughput).
  const rate = Math.max(100, Math.round(median(results.c.map((r) => r.rps)) / 2));
  const fixed = { a: [], c: [] };
  for (let round = 1; round <= ROUNDS; round++) {
    fixed.a.push(await load({ url: url(bare), requests: asClients("echo"), rate }));
    fixed.c.push(await load({ url: url(tenantry), requests: asClients("echo"), rate }));
    process.stderr.write(
      `  round ${round} at ${rate} req/s: p99 a ${fmt(fixed.a.at(-1).p99, 2)} ms, c ${fmt(fixed.c.at(-1).p99, 2)} ms\n`,
    );
  }

  console.log(`\n| server | req/s | p50 ms | p99 ms | errors |`);
  console.log("|---|---:|---:|---:|---:|");
  for (const [key, name] of rows) {
    const rs = results[key];
    const errors = rs.reduce((n, r) => n + r.errors + r.non2xx, 0);
    console.log(
      `| ${key}  ${name} | ${fmt(median(rs.map((r) => r.rps)))} | ${fmt(median(rs.map((r) => r.p50)), 2)} | ${fmt(median(rs.map((r) => r.p99)), 2)} | ${errors} |`,
    );
  }
  const perRound = (x, y, f = (p, q) => p.rps / q.rps) =>
    median(results[x].map((r, i) => f(r, results[y][i])));
  const p99Ratio = median(fixed.c.map((r, i) => r.p99 / fixed.a[i].p99));
  console.log(`\n| ratio | value | target |`);
  console.log("|---|---:|---|");
  console.log(`| c/b throughput | ${fmt(perRound("c", "b"), 2)}× | ≥ 8× |`);
  console.log(`| c/a throughput | ${fmt(perRound("c", "a") * 100, 1)} % | ≥ 50 % |`);
  console.log(
    `| c/a₀ throughput (reference: against the bare server on the request without its token) | ${fmt(perRound("c", "a₀") * 100, 1)} % | — |`,
  );
  console.log(
    `| p99 c / p99 a at the same load (${fmt(rate)} req/s: ${fmt(median(fixed.c.map((r) => r.p99)), 2)} / ${fmt(median(fixed.a.map((r) => r.p99)), 2)} ms) | ${fmt(p99Ratio, 2)}× | ≤ 2× |`,
  );
  if (db) {
    console.log(
      `| ds/d' throughput (the tenant-scoped query path, one round trip, against the plain one) | ${fmt(perRound("ds", "d'") * 100, 1)} % | ≥ 90 % |`,
    );
    console.log(
      `| d/d' throughput (the same in a per-call transaction: + a BEGIN/COMMIT round trip) | ${fmt(perRound("d", "d'") * 100, 1)} % | — |`,
    );
    console.log(
      `| ds/d'p throughput (reference: against the plain path with its statement prepared, as ds's is) | ${fmt(perRound("ds", "d'p") * 100, 1)} % | — |`,
    );
    console.log(
      `| ds/d'' throughput (reference: against a bare server doing the query) | ${fmt(perRound("ds", "d''") * 100, 1)} % | — |`,
    );
  }
  // Where the CPU goes, per request: the server, the load generator and PostgreSQL (every local
  // postgres process) share the machine's cores, so each one's share bounds the throughput.
  const cpu = (key, k) => median(results[key].map((r) => r.cpu?.[k] ?? Number.NaN));
  if (rows.some(([key]) => Number.isFinite(cpu(key, "server")))) {
    console.log(
      "\n| CPU time per request (µs, median over rounds) | server | load generator | PostgreSQL | total |",
    );
    console.log("|---|---:|---:|---:|---:|");
    for (const [key, name] of rows) {
      const [sv, ld, pgc] = ["server", "load", "pg"].map((k) => cpu(key, k));
      console.log(
        `| ${key}  ${name} | ${fmt(sv, 1)} | ${fmt(ld, 1)} | ${db ? fmt(pgc, 1) : "—"} | ${fmt(sv + ld + (db ? pgc : 0), 1)} |`,
      );
    }
  }
} finally {
  for (const s of servers) await stop(s);
}

try {
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
