import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { defineTool } from "../../src/tools/define-tool.js";
import { notesList, notesMigrations } from "../../src/tools/demo/notes.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { callTool, pollUntil, REPLICA_AUDIENCE, type Replica, startReplica } from "../support/replicas.js";
import { serviceGate } from "../support/services.js";

/*
 * A tenant whose tool calls are slow, or hang with their transaction open, must not take the
 * database from the others. Tool calls share one pool of runtime connections per replica; each
 * tenant may hold only its share of it (`database.max_connections_per_tenant`, half the pool by
 * default), and PostgreSQL ends a transaction left idle (`idle_in_transaction_timeout_ms`).
 */

const pgUp = await serviceGate("postgres");
const admin = { id: "db-noisy-neighbour-test" };
const POOL = 4;

/** Calls of `hold` stay inside their transaction until the test opens the gate. */
let openGate: () => void = () => {};
let gate: Promise<void> = Promise.resolve();
const closeGate = () => {
  gate = new Promise((resolve) => {
    openGate = resolve;
  });
};

const tools = [
  notesList,
  defineTool({
    name: "hold",
    description: "opens its transaction, then waits for the test",
    input: z.object({}),
    async run(_input, ctx) {
      await ctx.db.query("SELECT 1");
      await gate;
      return { held: true };
    },
  }),
  defineTool({
    name: "idle_then_query",
    description: "opens its transaction, idles in it, then queries again",
    input: z.object({ idleMs: z.number() }),
    async run(input, ctx) {
      await ctx.db.query("SELECT 1");
      await new Promise((resolve) => setTimeout(resolve, input.idleMs));
      await ctx.db.query("SELECT 1");
      return { ok: true };
    },
  }),
];

const within = <T>(promise: Promise<T>, ms: number): Promise<T | "timed out"> =>
  Promise.race([promise, new Promise<"timed out">((resolve) => setTimeout(() => resolve("timed out"), ms))]);

describe.skipIf(!pgUp)("one tenant cannot take the database from the others (PostgreSQL)", () => {
  let db: TestDatabase;
  let issuer: TestIssuer;
  const tokens: Record<string, string> = {};
  const replica = (database: Record<string, unknown>) =>
    startReplica({
      issuer,
      tools,
      migrations: notesMigrations,
      config: {
        database: { url: db.runtimeUrl, admin_url: db.adminUrl, pool_size: POOL, ...database },
        auth: { multi_tenant: { default_rate_limit: 1_000_000 } },
        rate_limit: { max_in_flight_per_tenant: 0 },
        audit: { sink: "none" },
      },
    });

  beforeAll(async () => {
    db = await createTestDatabase();
    issuer = await startTestIssuer();
    const first = await replica({});
    try {
      for (const id of ["acme", "globex"]) {
        await first.app.tenants.create(admin, { id, name: id });
        tokens[id] = await issuer.auth0Token({ orgId: id, sub: `auth0|${id}`, audience: REPLICA_AUDIENCE });
      }
    } finally {
      await first.close();
    }
  }, 120_000);
  afterAll(async () => {
    openGate();
    await issuer?.close();
    await db?.drop();
  });

  /** Starts `n` `hold` calls of acme and waits until every connection they can get is held. */
  const holdAcme = async (server: Replica, n: number, expectHeld: number) => {
    closeGate();
    const calls = Array.from({ length: n }, () => callTool(server.mcpUrl, tokens.acme!, "hold"));
    const key = (await server.app.tenants.show("acme")).key;
    const share = server.app.isolation.share;
    await pollUntil(
      async () => (share ? share.held(key) : (await idleInTransaction()).length) === expectHeld,
      5000,
      `acme holds ${expectHeld}`,
    );
    return calls;
  };
  /** Runtime connections idle inside a transaction, as PostgreSQL sees them. */
  const idleInTransaction = async () => {
    const { default: pg } = await import("pg");
    const su = new pg.Client({ connectionString: db.superUrl });
    await su.connect();
    try {
      const { rows } = await su.query(
        "SELECT pid FROM pg_stat_activity WHERE usename = $1 AND state = 'idle in transaction'",
        [db.runtimeRole],
      );
      return rows;
    } finally {
      await su.end();
    }
  };

  it("with its share (half the pool by default) taken, acme's calls wait; globex is served at once", async () => {
    const server = await replica({});
    try {
      expect(server.app.isolation.share?.max).toBe(POOL / 2);
      const acme = await holdAcme(server, POOL, POOL / 2);
      const globex = await within(callTool(server.mcpUrl, tokens.globex!, "notes_list"), 2000);
      expect(globex).not.toBe("timed out");
      expect((globex as Awaited<ReturnType<typeof callTool>>).status).toBe(200);
      openGate();
      // acme's waiting calls get their turn as its first ones finish.
      for (const r of await Promise.all(acme)) {
        expect(r.status).toBe(200);
        expect((r.body.result as { isError?: boolean }).isError).toBeFalsy();
      }
    } finally {
      openGate();
      await server.close();
    }
  });

  it("control: with no cap (max_connections_per_tenant = 0), acme's slow calls starve globex", async () => {
    const server = await replica({ max_connections_per_tenant: 0 });
    try {
      expect(server.app.isolation.share).toBeUndefined();
      const acme = await holdAcme(server, POOL, POOL);
      const globex = callTool(server.mcpUrl, tokens.globex!, "notes_list");
      expect(await within(globex, 1000)).toBe("timed out");
      openGate();
      expect((await globex).status).toBe(200);
      await Promise.all(acme);
    } finally {
      openGate();
      await server.close();
    }
  });

  it("a transaction left idle past idle_in_transaction_timeout_ms is ended; the call fails, the server serves on", async () => {
    const server = await replica({ idle_in_transaction_timeout_ms: 200 });
    try {
      const r = await callTool(server.mcpUrl, tokens.acme!, "idle_then_query", { idleMs: 600 });
      expect(r.status).toBe(200);
      expect(r.body.result).toMatchObject({ isError: true });
      expect(await idleInTransaction()).toEqual([]);
      // Every connection of the pool still works: nothing broken was handed back.
      const after = await Promise.all(
        Array.from({ length: POOL * 2 }, (_, i) =>
          callTool(server.mcpUrl, tokens[i % 2 ? "acme" : "globex"]!, "notes_list"),
        ),
      );
      for (const a of after) expect((a.body.result as { isError?: boolean }).isError).toBeFalsy();
      const quick = await callTool(server.mcpUrl, tokens.acme!, "idle_then_query", { idleMs: 10 });
      expect(quick.body.result).toMatchObject({ structuredContent: { ok: true } });
    } finally {
      await server.close();
    }
  });
});
