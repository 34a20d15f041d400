import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CONNECTION_WAIT_MS } from "../../src/db/postgres.js";
import { clientDeadlineMs } from "../../src/db/stall-watch.js";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { notesCreate, notesList, notesMigrations } from "../../src/tools/demo/notes.js";
import { notesListStatement, titlesOf } from "../support/notes-tools.js";
import { type PgProxy, startPgProxy } from "../support/pg-proxy.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { callTool, REPLICA_AUDIENCE, type Replica, startReplica } from "../support/replicas.js";
import { serviceGate } from "../support/services.js";

/*
 * PostgreSQL stops answering under a running server while its connections stay up (a stalled
 * primary, a network black hole, a failover that left half-open connections). A tool call must
 * fail with `backend_unavailable` within the client-side deadline (statement_timeout_ms plus a
 * margin), not hang until tool_timeout_ms and keep its connection; and once PostgreSQL answers
 * again the replica must serve by itself, each call with its own answer.
 */

const pgUp = await serviceGate("postgres");
const admin = { id: "database-stall-test" };
const STATEMENT_TIMEOUT_MS = 200;
const POOL = 2;
/** The deadline, plus the watch's two sweep periods at most, plus an HTTP round trip. */
const LATEST_MS = clientDeadlineMs(STATEMENT_TIMEOUT_MS) + 1500;

describe.skipIf(!pgUp)("tool calls when PostgreSQL stops answering", () => {
  let db: TestDatabase;
  let issuer: TestIssuer;
  let proxy: PgProxy;
  let server: Replica;
  const tokens: Record<string, string> = {};
  const call = (tenant: string, name: string, args: Record<string, unknown> = {}) =>
    callTool(server.mcpUrl, tokens[tenant]!, name, args);

  beforeAll(async () => {
    db = await createTestDatabase();
    issuer = await startTestIssuer();
    proxy = await startPgProxy();
    server = await startReplica({
      issuer,
      tools: [notesCreate, notesList, notesListStatement],
      migrations: notesMigrations,
      config: {
        // Only the runtime pool (tool calls) goes through the proxy; the registry reads directly.
        database: {
          url: proxy.via(db.runtimeUrl),
          admin_url: db.adminUrl,
          pool_size: POOL,
          statement_timeout_ms: STATEMENT_TIMEOUT_MS,
        },
        // Well past the deadline: a call still waiting then did not meet it.
        server: { tool_timeout_ms: 10_000 },
        auth: { multi_tenant: { registry_cache_ttl_ms: 60_000, default_rate_limit: 1_000_000 } },
        rate_limit: { max_in_flight_per_tenant: 0 },
        audit: { sink: "none" },
      },
    });
    for (const id of ["acme", "globex"]) {
      await server.app.tenants.create(admin, { id, name: id });
      tokens[id] = await issuer.auth0Token({
        orgId: id,
        sub: `auth0|${id}-user`,
        audience: REPLICA_AUDIENCE,
      });
      expect((await call(id, "notes_create", { title: `${id}-note`, body: "" })).status).toBe(200);
    }
  }, 120_000);
  afterAll(async () => {
    proxy?.resume();
    await server?.close();
    await proxy?.close();
    await issuer?.close();
    await db?.drop();
  });

  for (const tool of ["notes_list", "notes_list_statement"]) {
    it(`${tool}: the call fails with backend_unavailable within the deadline; the next one is served`, async () => {
      // The pool's connections are open (a call just used them): this is about unanswered
      // statements, not about connecting, which CONNECTION_WAIT_MS bounds.
      expect(titlesOf(await call("acme", tool))).toEqual(["acme-note"]);
      proxy.stall();
      const started = performance.now();
      const stalled = await call("acme", tool);
      const ms = performance.now() - started;
      proxy.resume();
      expect(stalled.status).toBe(200);
      expect(stalled.body.result).toMatchObject({
        isError: true,
        content: [{ type: "text", text: expect.stringMatching(/^backend_unavailable: /) }],
      });
      expect(ms).toBeLessThan(LATEST_MS);

      // Served again, each call with its own tenant's rows, by every connection of the pool.
      const again = await Promise.all(
        ["acme", "globex", "acme", "globex"].map(async (t) => ({ t, titles: titlesOf(await call(t, tool)) })),
      );
      for (const { t, titles } of again) expect(titles).toEqual([`${t}-note`]);
    }, 30_000);

    it(`${tool}: a call that must open a connection while PostgreSQL is silent fails with service_unavailable`, async () => {
      // Every connection of the pool in use, then lost to the deadline: the next call must connect.
      await Promise.all(["acme", "globex"].map((t) => call(t, tool)));
      proxy.stall();
      const lost = await Promise.all(["acme", "globex"].map((t) => call(t, tool)));
      for (const r of lost) expect(r.body.result).toMatchObject({ isError: true });
      const started = performance.now();
      const connecting = await call("acme", tool);
      const ms = performance.now() - started;
      proxy.resume();
      expect(connecting.status).toBe(200);
      expect(connecting.body.result).toMatchObject({
        isError: true,
        content: [{ type: "text", text: expect.stringMatching(/^service_unavailable: /) }],
      });
      expect(ms).toBeLessThan(CONNECTION_WAIT_MS + 1500);
      expect(titlesOf(await call("acme", tool))).toEqual(["acme-note"]);
    }, 30_000);
  }
});
