import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { freePort } from "../support/ports.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { uniqueKeyPrefix } from "../support/redis.js";
import { callTool, type McpReply } from "../support/replicas.js";
import { REDIS_URL, serviceGate } from "../support/services.js";

/*
 * Two real `tenantry serve` processes (the built CLI) on one PostgreSQL database and one Redis,
 * as a two-replica deployment would run. A tenant limited to 600/min whose requests alternate
 * between them gets 600 plus what refilled during the run — within 2% — not 2 × 600.
 */

const pgUp = await serviceGate("postgres");
const redisUp = await serviceGate("redis");
const CLI = resolve("dist/cli/main.js");

const LIMIT = 600; // per minute: one request every 100 ms
const INTERVAL_MS = 60_000 / LIMIT;
const REQUESTS = 900;
const CONCURRENCY = 8;
const BASE_URL = "https://mcp.tenantry.test";
const AUDIENCE = `${BASE_URL}/mcp`;

interface Proc {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function cli(args: string[]): Proc {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, TENANTRY_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (c: Buffer) => {
    out += c.toString();
  });
  child.stderr!.on("data", (c: Buffer) => {
    out += c.toString();
  });
  const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
  return { child, output: () => out.slice(-4000), exited };
}

async function waitHealthy(port: number, proc: Proc): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.child.exitCode !== null) throw new Error(`serve exited early:\n${proc.output()}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`serve on ${port} never became healthy:\n${proc.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function metric(text: string, kind: "allowed" | "limited", tenant: string): number {
  const line = text
    .split("\n")
    .find((l) => l.startsWith(`tenantry_rate_limit_${kind}_total{tenant="${tenant}"}`));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

describe.skipIf(!pgUp || !redisUp)("two `tenantry serve` processes sharing Redis", () => {
  let db: TestDatabase;
  let issuer: TestIssuer;
  let dir: string;
  let configPath: string;
  const prefix = uniqueKeyPrefix("processes");
  const servers: Proc[] = [];
  const ports: number[] = [];

  beforeAll(async () => {
    if (!existsSync(CLI))
      throw new Error(`${CLI} is missing: run \`npm run build\` first (\`npm test\` does)`);
    db = await createTestDatabase();
    issuer = await startTestIssuer();
    dir = await mkdtemp(join(tmpdir(), "tenantry-processes-"));
    configPath = join(dir, "tenantry.toml");
    await writeFile(
      configPath,
      `[server]
host = "127.0.0.1"
base_url = "${BASE_URL}"

[auth]
provider = "auth0"
issuer = "${issuer.issuer}/"
jwks_uri = "${issuer.jwksUri}"
audience = "${AUDIENCE}"

[database]
url = "${db.runtimeUrl}"
admin_url = "${db.adminUrl}"
data_dir = "${join(dir, "data")}"

[storage]
root = "${join(dir, "objects")}"

[audit]
path = "${join(dir, "audit.jsonl")}"

[lifecycle]
archive_dir = "${join(dir, "archive")}"

[rate_limit]
backend = "redis"
redis_url = "${REDIS_URL}"
key_prefix = "${prefix}"
on_backend_error = "deny"
`,
    );
    const create = cli([
      "tenants",
      "create",
      "acme",
      "--name",
      "Acme",
      "--rate-limit",
      String(LIMIT),
      "--config",
      configPath,
    ]);
    expect(await create.exited, create.output()).toBe(0);
    // One after the other: each runs the (idempotent) migrations at start.
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      const proc = cli(["serve", "--config", configPath, "--port", String(port)]);
      servers.push(proc);
      ports.push(port);
      await waitHealthy(port, proc);
    }
  }, 60_000);

  afterAll(async () => {
    for (const s of servers) {
      if (s.child.exitCode === null) {
        s.child.kill("SIGTERM");
        const timer = setTimeout(() => s.child.kill("SIGKILL"), 5000);
        await s.exited;
        clearTimeout(timer);
      }
    }
    const redis = new Redis(REDIS_URL);
    await redis.del(`${prefix}:{acme}`).catch(() => {});
    redis.disconnect();
    await issuer?.close();
    await db?.drop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(`enforces one global limit (within 2%) for requests alternating between them`, async () => {
    const token = await issuer.auth0Token({ orgId: "acme", sub: "auth0|alice", audience: AUDIENCE });
    const urls = ports.map((p) => `http://127.0.0.1:${p}/mcp`);
    const replies: McpReply[][] = urls.map(() => []);
    const timings: { sent: number; done: number }[] = [];
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < REQUESTS; i = next++) {
        const sent = performance.now();
        const r = await callTool(urls[i % 2]!, token, "whoami");
        timings[i] = { sent, done: performance.now() };
        replies[i % 2]!.push(r);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    // Each decision happened somewhere between a request's send and its response: take the
    // midpoints of the first and the last request as the window the limiter saw.
    const first = timings[0]!;
    const last = timings[REQUESTS - 1]!;
    const window = (last.sent + last.done) / 2 - (first.sent + first.done) / 2;
    const outer = Math.max(...timings.map((t) => t.done)) - first.sent;

    const all = replies.flat();
    for (const r of all) expect([200, 429]).toContain(r.status);
    const allowed = all.filter((r) => r.status === 200).length;
    // What one limiter would allow: the full capacity plus one request per interval of the run.
    const expected = LIMIT + window / INTERVAL_MS;
    const error = Math.abs(allowed - expected) / expected;
    console.info(
      `[multi-replica-processes] ${allowed} of ${REQUESTS} allowed in ${Math.round(window)} ms ` +
        `(${replies.map((r) => r.filter((x) => x.status === 200).length).join(" + ")}); ` +
        `one global limiter: ${expected.toFixed(1)}; error ${(error * 100).toFixed(2)}%`,
    );
    expect(allowed).toBeGreaterThanOrEqual(LIMIT);
    // Never more than one limiter could allow over the whole run, whatever the timing.
    expect(allowed).toBeLessThanOrEqual(LIMIT + Math.ceil(outer / INTERVAL_MS));
    expect(error).toBeLessThanOrEqual(0.02);
    // Both processes served part of the quota and refused part of the rest.
    for (const r of replies) {
      expect(r.some((x) => x.status === 200)).toBe(true);
      expect(r.some((x) => x.status === 429)).toBe(true);
    }
    for (const r of all.filter((x) => x.status === 429))
      expect(r.body).toMatchObject({ error: "rate_limited" });

    // Each process's /metrics counts its own decisions; together they are the run.
    let allowedTotal = 0;
    let limitedTotal = 0;
    for (const port of ports) {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      allowedTotal += metric(text, "allowed", "acme");
      limitedTotal += metric(text, "limited", "acme");
    }
    expect(allowedTotal).toBe(allowed);
    expect(limitedTotal).toBe(REQUESTS - allowed);
  }, 60_000);
});
