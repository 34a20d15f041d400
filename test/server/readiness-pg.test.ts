import { createConnection, createServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { type Replica, startReplica } from "../support/replicas.js";
import { PG_HOST, PG_PORT, serviceGate } from "../support/services.js";

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
  let silent = false;
  const sockets = new Set<Socket>();
  const proxy = createServer((client) => {
    sockets.add(client);
    client.on("error", () => {});
    client.on("close", () => sockets.delete(client));
    if (silent) return;
    const upstream = createConnection(PG_PORT, PG_HOST);
    sockets.add(upstream);
    upstream.on("error", () => client.destroy());
    upstream.on("close", () => {
      sockets.delete(upstream);
      client.destroy();
    });
    client.on("close", () => upstream.destroy());
    client.on("data", (d) => !silent && upstream.write(d));
    upstream.on("data", (d) => !silent && client.write(d));
  });
  const via = (url: string, port: number) => url.replace(/@[^/]+\//, `@127.0.0.1:${port}/`);
  const readyz = async () => {
    const started = Date.now();
    const res = await fetch(`${server.url}/readyz`, { signal: AbortSignal.timeout(15_000) });
    return { status: res.status, body: (await res.json()) as unknown, ms: Date.now() - started };
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    issuer = await startTestIssuer();
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const { port } = proxy.address() as { port: number };
    server = await startReplica({
      issuer,
      config: { database: { url: via(db.runtimeUrl, port), admin_url: via(db.adminUrl, port) } },
    });
  }, 60_000);
  afterAll(async () => {
    silent = false;
    for (const s of sockets) s.destroy();
    await server?.close();
    await new Promise((resolve) => proxy.close(resolve));
    await issuer?.close();
    await db?.drop();
  }, 60_000);

  it("answers 503 within a few seconds, not when TCP gives up", async () => {
    expect(await readyz()).toMatchObject({ status: 200, body: { checks: { database: "ok" } } });
    silent = true;
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
