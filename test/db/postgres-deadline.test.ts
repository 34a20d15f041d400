/**
 * PostgreSQL stops answering while the connections stay up (a stalled server, a network black
 * hole, a failover that left half-open connections). Its statement_timeout cannot fire then: every
 * statement must still fail within the client-side deadline with `backend_unavailable`, its
 * connection must be destroyed rather than returned (its late answer would be read as the next
 * statement's), and the pool must serve again by itself once PostgreSQL answers.
 */
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Binding } from "../../src/db/database.js";
import { CONNECTION_WAIT_MS, PostgresDatabase } from "../../src/db/postgres.js";
import { clientDeadlineMs } from "../../src/db/stall-watch.js";
import { type PgProxy, startPgProxy } from "../support/pg-proxy.js";
import { withTestDatabase } from "../support/postgres.js";
import { PG_SUPER_URL, serviceGate } from "../support/services.js";

const pgUp = await serviceGate("postgres");

const STATEMENT_TIMEOUT_MS = 200;
const DEADLINE_MS = clientDeadlineMs(STATEMENT_TIMEOUT_MS);
/** The deadline, plus the watch's two sweep periods at most, plus scheduling slack. */
const LATEST_MS = DEADLINE_MS + 1000;

type Outcome = { value?: unknown; error?: unknown; pending?: true; ms: number };

/** How `pending` settles and after how long, or `pending: true` if it has not after `ms` (the old, unbounded wait). */
async function outcome(pending: Promise<unknown>, ms = LATEST_MS + 2000): Promise<Outcome> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([
    pending.then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    ),
    new Promise<{ pending: true }>((resolve) => {
      timer = setTimeout(() => resolve({ pending: true }), ms);
    }),
  ]);
  clearTimeout(timer);
  return { ...settled, ms: performance.now() - started };
}

/** Failed with backend_unavailable, no sooner than the deadline and not long after it. */
function expectDeadline(result: Outcome, sentAt = 0): void {
  expect(result.pending).toBeUndefined();
  expect(result.error).toMatchObject({ name: "TenantryError", code: "backend_unavailable" });
  expect(result.ms - sentAt).toBeGreaterThanOrEqual(DEADLINE_MS - 5);
  expect(result.ms).toBeLessThan(LATEST_MS + sentAt);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `ready()` holds, checking every 50 ms; fails after `ms`. */
async function until(ready: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!(await ready())) {
    if (performance.now() > end) throw new Error(`not ready after ${ms} ms`);
    await sleep(50);
  }
}

async function withSuperuser<T>(fn: (su: pg.Client) => Promise<T>): Promise<T> {
  const su = new pg.Client({ connectionString: PG_SUPER_URL });
  await su.connect();
  try {
    return await fn(su);
  } finally {
    await su.end();
  }
}

const binding: Binding = {
  name: "deadline_test_binding",
  // Returns no rows, as a binding must (its result has no row description).
  text: "SELECT FROM (SELECT set_config('app.tenant_id', $1, true) AS c) AS b WHERE c IS NULL",
  values: ["acme"],
};

describe.skipIf(!pgUp)("PostgresDatabase when PostgreSQL stops answering", () => {
  const testDb = withTestDatabase();
  let proxy: PgProxy;
  const open = (poolSize = 1) =>
    new PostgresDatabase(proxy.via(testDb().adminUrl), {
      poolSize,
      statementTimeoutMs: STATEMENT_TIMEOUT_MS,
    });
  const pid = async (db: PostgresDatabase) =>
    (await db.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;

  beforeAll(async () => {
    proxy = await startPgProxy();
  });
  afterEach(() => proxy.resume());
  afterAll(async () => {
    await proxy?.close();
  });

  // Each test opens its connection before the stall: opening one is bounded by CONNECTION_WAIT_MS.
  it("a query fails within the deadline; the next one gets its own answer on a new connection", async () => {
    const db = open();
    try {
      const before = await pid(db);
      proxy.stall();
      expectDeadline(await outcome(db.query("SELECT 'stale' AS v")));
      // The stalled answer is delivered to whatever is still open: not to the pool, whose
      // connection (of one) now is a new one.
      proxy.resume();
      const after = await db.query<{ v: string; pid: number }>(
        "SELECT 'fresh' AS v, pg_backend_pid() AS pid",
      );
      expect(after.rows).toEqual([{ v: "fresh", pid: expect.any(Number) }]);
      expect(after.rows[0]!.pid).not.toBe(before);
      expect((await db.query("SELECT 2 AS n")).rows).toEqual([{ n: 2 }]);
    } finally {
      await db.close();
    }
  });

  it("only silence counts: statements that each answer in time may take longer than the deadline together", async () => {
    const db = open();
    // Half the timeout each: a loaded CI machine can delay a statement's end by tens of ms.
    const nap = `SELECT pg_sleep(${(STATEMENT_TIMEOUT_MS * 0.5) / 1000})`;
    const naps = Math.ceil(DEADLINE_MS / (STATEMENT_TIMEOUT_MS * 0.5)) + 1;
    try {
      // One script (a migration), each statement timed by PostgreSQL on its own.
      await db.exec(Array.from({ length: naps }, () => nap).join("; "));
      // Pipelined statements of one transaction, all on the wire at once.
      const rows = await db.transaction((tx) =>
        Promise.all(Array.from({ length: naps }, (_, n) => tx.query(`${nap}, ${n} AS n`))),
      );
      expect(rows.map((r) => r.rows[0]!.n)).toEqual(Array.from({ length: naps }, (_, n) => n));
      // A statement over the timeout is cancelled by PostgreSQL, well before the deadline.
      const slow = await outcome(db.query(`SELECT pg_sleep(${(STATEMENT_TIMEOUT_MS * 4) / 1000})`));
      expect(slow.error).toMatchObject({ code: "57014" }); // query_canceled
      expect(slow.ms).toBeLessThan(DEADLINE_MS);
    } finally {
      await db.close();
    }
  });

  it("a bound statement fails within the deadline; the next one gets its own answer", async () => {
    const db = open();
    try {
      await pid(db); // the connection is open: this is about statements, not connecting
      proxy.stall();
      expectDeadline(await outcome(db.bound!(binding, "SELECT $1::text AS v", ["stale"])));
      proxy.resume();
      const fresh = await db.bound!<{ v: string; t: string }>(
        binding,
        "SELECT $1::text AS v, current_setting('app.tenant_id') AS t",
        ["fresh"],
      );
      expect(fresh.rows).toEqual([{ v: "fresh", t: "acme" }]);
    } finally {
      await db.close();
    }
  });

  it("a transaction whose statement goes unanswered fails within the deadline", async () => {
    const db = open();
    try {
      let sentAt = 0;
      const started = performance.now();
      const result = await outcome(
        db.transaction(
          async (tx) => {
            await tx.query("SELECT 1");
            proxy.stall();
            sentAt = performance.now() - started;
            return (await tx.query("SELECT 'stale' AS v")).rows;
          },
          { begin: "SELECT set_config('app.tenant_id', 'acme', true)" },
        ),
      );
      expectDeadline(result, sentAt);
      proxy.resume();
      const fresh = await db.transaction(async (tx) => (await tx.query("SELECT 'fresh' AS v")).rows);
      expect(fresh).toEqual([{ v: "fresh" }]);
    } finally {
      await db.close();
    }
  });

  it("a transaction whose BEGIN goes unanswered, or whose COMMIT does, fails within the deadline", async () => {
    const db = open();
    try {
      await pid(db);
      proxy.stall();
      expectDeadline(await outcome(db.transaction(async (tx) => (await tx.query("SELECT 1 AS n")).rows)));
      proxy.resume();

      let sentAt = 0;
      const started = performance.now();
      const committing = outcome(
        db.transaction(async (tx) => {
          await tx.query("SELECT 1");
          proxy.stall();
          sentAt = performance.now() - started;
          return "done";
        }),
      );
      expectDeadline(await committing, sentAt);
      proxy.resume();
      expect(await db.transaction(async (tx) => (await tx.query("SELECT 3 AS n")).rows)).toEqual([{ n: 3 }]);
    } finally {
      await db.close();
    }
  });

  it("a pool whose every connection stalled frees them all; a caller waiting for one is served after", async () => {
    const db = open(2);
    try {
      await Promise.all([pid(db), pid(db)]); // two connections open
      proxy.stall();
      const [a, b] = [db.query("SELECT 'a' AS v"), db.query("SELECT 'b' AS v")];
      const waiting = db.query<{ v: string }>("SELECT 'c' AS v"); // no free connection: it waits
      waiting.catch(() => {});
      for (const stalled of await Promise.all([outcome(a), outcome(b)])) expectDeadline(stalled);
      proxy.resume();
      expect((await waiting).rows).toEqual([{ v: "c" }]);
      const both = await Promise.all([db.query("SELECT 'd' AS v"), db.query("SELECT 'e' AS v")]);
      expect(both.map((r) => r.rows)).toEqual([[{ v: "d" }], [{ v: "e" }]]);
    } finally {
      await db.close();
    }
  });

  it("a statement no connection takes fails with service_unavailable after the connection wait, as a transaction does", async () => {
    const db = open(2);
    try {
      proxy.stall(); // no connection is open yet: opening one waits on silence
      const calls = {
        query: db.query("SELECT 1 AS n"),
        exec: db.exec("SELECT 1"),
        bound: db.bound!(binding, "SELECT 1 AS n"), // `transaction: "statement"` tools
        transaction: db.transaction(async (tx) => (await tx.query("SELECT 1 AS n")).rows),
      };
      const results = await Promise.all(
        Object.values(calls).map((call) => outcome(call, CONNECTION_WAIT_MS + 3000)),
      );
      for (const [i, result] of results.entries()) {
        expect({ call: Object.keys(calls)[i], error: result.error }).toMatchObject({
          error: { name: "TenantryError", code: "service_unavailable" },
        });
        expect(result.ms).toBeGreaterThanOrEqual(CONNECTION_WAIT_MS - 50);
        expect(result.ms).toBeLessThan(CONNECTION_WAIT_MS + 1500);
      }
      proxy.resume();
      // A statement that reached PostgreSQL keeps its own error.
      expect(await outcome(db.query("SELECT no_such_column"))).toMatchObject({ error: { code: "42703" } });
      expect(await outcome(db.bound!(binding, "SELECT no_such_column"))).toMatchObject({
        error: { code: "42703" },
      });
      expect((await db.bound!(binding, "SELECT 2 AS n")).rows).toEqual([{ n: 2 }]);
    } finally {
      await db.close();
    }
  }, 15_000);

  it("a LISTEN connection that goes silent is closed by its heartbeat's deadline, reconnects once PostgreSQL answers, and hears NOTIFYs again", async () => {
    const db = new PostgresDatabase(proxy.via(testDb().adminUrl), {
      poolSize: 1,
      statementTimeoutMs: STATEMENT_TIMEOUT_MS,
      listenHeartbeatMs: 100,
    });
    const listenerPids = () =>
      withSuperuser(async (su) => {
        const r = await su.query<{ pid: number }>(
          "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tenantry-listen'",
          [testDb().name],
        );
        return r.rows.map((row) => row.pid);
      });
    const heard: string[] = [];
    // `undefined`: (re)connected, notifications may have been missed.
    const stop = await db.listen("heartbeat_test", (payload) => heard.push(payload ?? "(connected)"));
    try {
      expect(heard).toEqual(["(connected)"]);
      const [before] = await listenerPids();
      expect(before).toEqual(expect.any(Number));
      proxy.stall();
      // A heartbeat is sent within 100 ms and goes unanswered: the deadline closes the connection.
      await sleep(LATEST_MS + 200);
      expect(heard).toEqual(["(connected)"]);
      proxy.resume();
      // The listener reconnects by itself (the registry drops its whole cache then)...
      await until(() => heard.length === 2, 5000);
      expect(heard).toEqual(["(connected)", "(connected)"]);
      await until(async () => {
        const pids = await listenerPids();
        return pids.length === 1 && pids[0] !== before;
      }, 5000);
      // ...and hears what is sent after, once.
      const notifier = new pg.Client({ connectionString: testDb().adminUrl }); // not through the proxy
      await notifier.connect();
      await notifier.query("SELECT pg_notify('heartbeat_test', 'after')").finally(() => notifier.end());
      await until(() => heard.includes("after"), 5000);
      await sleep(300);
      expect(heard).toEqual(["(connected)", "(connected)", "after"]);
    } finally {
      proxy.resume();
      await stop();
      await db.close();
    }
  }, 20_000);

  it("LISTEN against a server that never answers fails with backend_unavailable, within the connection wait", async () => {
    const db = open();
    try {
      proxy.stall();
      const result = await outcome(
        db.listen("deadline_test", () => {}),
        CONNECTION_WAIT_MS + 3000,
      );
      expect(result.pending).toBeUndefined();
      expect(result.error).toMatchObject({ code: "backend_unavailable" });
      expect(result.ms).toBeLessThan(CONNECTION_WAIT_MS + 1000);
      // The caller was told, and has nothing to stop a retry with: none runs behind its back.
      proxy.resume();
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const listeners = await withSuperuser((su) =>
        su.query(
          "SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tenantry-listen'",
          [testDb().name],
        ),
      );
      expect(listeners.rowCount).toBe(0);
    } finally {
      proxy.resume();
      await db.close();
    }
  }, 15_000);

  it("a LISTEN stopped while it reconnects stays stopped: the reconnect in flight does not listen behind its back", async () => {
    const db = open();
    const listeners = () =>
      withSuperuser((su) =>
        su.query<{ pid: number }>(
          "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tenantry-listen'",
          [testDb().name],
        ),
      );
    try {
      const payloads: (string | undefined)[] = [];
      const stop = await db.listen("deadline_test", (p) => payloads.push(p));
      const [listener] = (await listeners()).rows;
      // The listener's connection dies; it reconnects a second later, into a stalled network.
      await withSuperuser((su) => su.query("SELECT pg_terminate_backend($1)", [listener!.pid]));
      await new Promise((resolve) => setTimeout(resolve, 200));
      proxy.stall();
      await new Promise((resolve) => setTimeout(resolve, 1300)); // the reconnect is under way
      await stop();
      const heard = payloads.length;
      proxy.resume();
      await new Promise((resolve) => setTimeout(resolve, 1500));
      expect((await listeners()).rowCount).toBe(0);
      expect(payloads.length).toBe(heard);
    } finally {
      proxy.resume();
      await db.close();
    }
  }, 15_000);
});
