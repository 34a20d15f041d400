import { createConnection } from "node:net";
import pg from "pg";

/**
 * Integration tests run against real PostgreSQL and Redis. Locally a missing service skips its
 * tests with a warning; in CI (`TENANTRY_REQUIRE_SERVICES=1`) it fails them, so a broken service
 * container can never turn the isolation suite into a silent pass.
 */
export const requireServices = process.env.TENANTRY_REQUIRE_SERVICES === "1";

export const PG_HOST = "127.0.0.1";
export const PG_PORT = 5432;
/** Superuser connection (trust auth) used to probe and to create throwaway databases. */
export const PG_SUPER_URL = `postgres://postgres@${PG_HOST}:${PG_PORT}/test`;
export const REDIS_HOST = "127.0.0.1";
export const REDIS_PORT = 6379;
export const REDIS_URL = `redis://${REDIS_HOST}:${REDIS_PORT}`;

export type ServiceName = "postgres" | "redis";

export async function postgresAvailable(): Promise<boolean> {
  const client = new pg.Client({
    connectionString: PG_SUPER_URL,
    connectionTimeoutMillis: 1000,
    query_timeout: 1000,
  });
  // An idle client's socket error would otherwise be an unhandled 'error' event.
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("SELECT 1");
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

export function redisAvailable(): Promise<boolean> {
  return pingRedis(REDIS_PORT, REDIS_HOST);
}

/** Whether a Redis on `port` answers PING within `timeoutMs` ("-NOAUTH …" counts as unavailable). */
export function pingRedis(port: number, host = "127.0.0.1", timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    let reply = "";
    const finish = (up: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(up);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk: string) => {
      reply += chunk;
      if (reply.includes("\r\n")) finish(reply.startsWith("+PONG"));
    });
    socket.on("error", () => finish(false));
    socket.on("close", () => finish(false));
  });
}

const probes: Record<ServiceName, () => Promise<boolean>> = {
  postgres: postgresAvailable,
  redis: redisAvailable,
};
const where: Record<ServiceName, string> = {
  postgres: `${PG_HOST}:${PG_PORT}`,
  redis: `${REDIS_HOST}:${REDIS_PORT}`,
};

/**
 * Whether tests needing `name` should run. Throws when the service is missing and required.
 *
 * @example
 * const pgUp = await serviceGate("postgres");
 * describe.skipIf(!pgUp)("row-level security", () => { … });
 */
export async function serviceGate(name: ServiceName): Promise<boolean> {
  if (await probes[name]()) return true;
  if (requireServices) {
    throw new Error(
      `${name} is required in CI (TENANTRY_REQUIRE_SERVICES=1) but is not reachable at ${where[name]}`,
    );
  }
  console.warn(
    `[tenantry tests] ${name} is not reachable at ${where[name]}: skipping the tests that need it ` +
      "(set TENANTRY_REQUIRE_SERVICES=1 to make this a failure)",
  );
  return false;
}
