import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { freePort } from "./ports.js";
import { pingRedis, REDIS_URL, redisAvailable, requireServices, serviceGate } from "./services.js";

export { pingRedis, REDIS_URL, redisAvailable };

/**
 * Whether tests needing the shared Redis (127.0.0.1:6379) should run: skips with a warning when it
 * is unreachable, fails when `TENANTRY_REQUIRE_SERVICES=1`.
 *
 * @example
 * const redisUp = await redisGate();
 * describe.skipIf(!redisUp)("redis store", () => { … });
 */
export function redisGate(): Promise<boolean> {
  return serviceGate("redis");
}

/** Like {@link redisGate}, for tests that run their own server with {@link startPrivateRedis}. */
export function redisServerGate(): boolean {
  const probe = spawnSync("redis-server", ["--version"], { encoding: "utf8", timeout: 5000 });
  if (probe.status === 0) return true;
  const why = "the redis-server binary is not on PATH";
  if (requireServices)
    throw new Error(`redis-server is required in CI (TENANTRY_REQUIRE_SERVICES=1) but ${why}`);
  console.warn(
    `[tenantry tests] ${why}: skipping the tests that start a private Redis ` +
      "(set TENANTRY_REQUIRE_SERVICES=1 to make this a failure)",
  );
  return false;
}

/** A key prefix unique to this test run, so concurrent test files never share keys. */
export function uniqueKeyPrefix(label = "test"): string {
  return `tenantry:test:${label}:${randomBytes(6).toString("hex")}`;
}

/** A Redis server owned by one test: stop and start it without disturbing the shared one. */
export interface PrivateRedis {
  url: string;
  port: number;
  /** Starts it again on the same port (empty: nothing is persisted). */
  start(): Promise<void>;
  /** Stops it and waits for the process to exit. Safe to call when stopped. */
  stop(): Promise<void>;
}

/**
 * Spawns `redis-server` on a free port of 127.0.0.1 with persistence off, and waits until it
 * answers PING.
 */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  // A worker that dies must not leave servers behind.
  const killOnExit = () => child?.kill("SIGKILL");
  process.once("exit", killOnExit);

  const start = async () => {
    if (child) return;
    const spawned = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      { stdio: "ignore" },
    );
    child = spawned;
    spawned.once("exit", () => {
      if (child === spawned) child = undefined;
    });
    const deadline = Date.now() + 10_000;
    while (!(await pingRedis(port))) {
      if (!child || Date.now() > deadline) throw new Error(`redis-server did not start on port ${port}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const stop = async () => {
    const running = child;
    if (!running) return;
    const exited = once(running, "exit");
    running.kill("SIGTERM");
    await exited;
  };

  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    start,
    async stop() {
      await stop();
    },
  };
}
