import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type E2eServer, startServer } from "../e2e/helpers.js";
import { type PrivateRedis, redisServerGate, startPrivateRedis, uniqueKeyPrefix } from "../support/redis.js";

const haveRedis = redisServerGate();

async function readyz(server: E2eServer): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${server.url}/readyz`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe.skipIf(!haveRedis)("/readyz with the redis rate-limit backend", () => {
  let redis: PrivateRedis;
  const servers: Record<"deny" | "local", E2eServer | undefined> = { deny: undefined, local: undefined };

  beforeAll(async () => {
    redis = await startPrivateRedis();
    for (const policy of ["deny", "local"] as const) {
      servers[policy] = await startServer({
        config: {
          rate_limit: {
            backend: "redis",
            redis_url: redis.url,
            key_prefix: uniqueKeyPrefix("readyz"),
            on_backend_error: policy,
          },
        },
        tools: [],
        tenants: [],
      });
    }
  }, 30_000);
  afterAll(async () => {
    for (const s of Object.values(servers)) await s?.close();
    await redis?.stop();
  });

  it("is ready while Redis answers, and says so", async () => {
    for (const s of Object.values(servers)) {
      const { status, body } = await readyz(s as E2eServer);
      expect(status).toBe(200);
      expect(body).toMatchObject({ status: "ready", checks: { database: "ok", rate_limit: "ok" } });
    }
  });

  it("with on_backend_error = deny, is not ready while Redis is down (every request would be denied)", async () => {
    await redis.stop();
    try {
      const { status, body } = await readyz(servers.deny as E2eServer);
      expect(status).toBe(503);
      expect(body).toMatchObject({
        status: "not_ready",
        checks: { database: "ok", rate_limit: "unavailable" },
      });
      // `local` keeps serving (limited per replica): still ready, but the check shows the outage.
      const local = await readyz(servers.local as E2eServer);
      expect(local.status).toBe(200);
      expect(local.body).toMatchObject({ status: "ready", checks: { rate_limit: "degraded" } });
    } finally {
      await redis.start();
    }
    // Recovery is seen without restarting the replica.
    const deadline = Date.now() + 10_000;
    let last = await readyz(servers.deny as E2eServer);
    while (last.status !== 200 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      last = await readyz(servers.deny as E2eServer);
    }
    expect(last.status).toBe(200);
  }, 30_000);
});
