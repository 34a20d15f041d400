import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { type PgProxy, startPgProxy } from "../support/pg-proxy.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { type Replica, startReplica } from "../support/replicas.js";
import { serviceGate } from "../support/services.js";

const pgUp = await serviceGate("postgres");

/*
 * PostgreSQL behind a proxy that can go silent: connections stay open, nothing is answered (a
 * network partition, a hung primary). Refused connections fail fast anyway; silence must not
 * hold a readiness probe until TCP gives up.
 */
describe.skipIf(!pgUp)("/readyz when PostgreSQL stops answering", () => {
  let db: TestDatabase;
  let issuer: TestIssuer;
  let server: Replica;
  let proxy: PgProxy;
  const readyz = async () => {
    const started = Date.now();
    const res = await fetch(`${server.url}/readyz`, { signal: AbortSignal.timeout(15_000) });
    return { status: res.status, body: (await res.json()) as unknown, ms: Date.now() - started };
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    issuer = await startTestIssuer();
    proxy = await startPgProxy();
    server = await startReplica({
      issuer,
      config: { database: { url: proxy.via(db.runtimeUrl), admin_url: proxy.via(db.adminUrl) } },
    });
  }, 60_000);
  afterAll(async () => {
    await proxy?.close();
    await server?.close();
    await issuer?.close();
    await db?.drop();
  }, 60_000);

  it("answers 503 within a few seconds, not when TCP gives up", async () => {
    expect(await readyz()).toMatchObject({ status: 200, body: { checks: { database: "ok" } } });
    proxy.stall();
    for (let i = 0; i < 2; i++) {
      const probe = await readyz();
      expect(probe).toMatchObject({
        status: 503,
        body: { status: "not_ready", checks: { database: "unavailable" } },
      });
      expect(probe.ms).toBeLessThan(4000);
    }
  }, 60_000);
});
