import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { schemaNameForKey } from "../../src/isolation/names.js";
import type { IsolationName } from "../../src/isolation/strategy.js";
import type { TenantRecord } from "../../src/tenancy/tenant.js";
import type { TenantDb } from "../../src/tools/tool-context.js";
import { type IsolationSetup, setupIsolation } from "../support/isolation.js";
import { createTestDatabase, runSql, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";

/**
 * Session state a tool's SQL creates outlives its transaction unless Tenantry resets it: a WITH
 * HOLD cursor or a temporary table keeps rows, a session-level setting keeps a value. On a pooled
 * connection (or PGlite's single one) the next call may be another tenant's: with the same
 * (buggy, not hostile) tool, it would read the first tenant's rows. Every call's session state
 * must end with the call, in both transaction modes.
 */

const pgUp = await serviceGate("postgres");

type Mode = "call" | "statement";

type Setup = IsolationSetup;
/** One connection: the second tenant's call lands where the first one's ran. */
const setup = (strategy: IsolationName, db: TestDatabase | undefined) =>
  setupIsolation(strategy, db, { poolSize: 1 });

async function asTool<T>(
  s: Setup,
  t: TenantRecord,
  mode: Mode,
  fn: (db: TenantDb) => Promise<T>,
): Promise<T> {
  const db = mode === "statement" ? s.isolation.openStatements(t) : s.isolation.open(t);
  try {
    const value = await fn(db);
    await db.finish(true);
    return value;
  } catch (error) {
    await db.finish(false);
    throw error;
  }
}

/** What the second tenant's call finds of the first one's leftovers, or the error it gets. */
async function leftover(p: Promise<{ rows: unknown[] }>): Promise<unknown> {
  try {
    return (await p).rows;
  } catch (error) {
    return (error as { code?: string }).code;
  }
}

const combos = [
  { name: "PGlite, row_level_security", strategy: "row_level_security", postgres: false },
  { name: "PostgreSQL, row_level_security", strategy: "row_level_security", postgres: true },
  { name: "PostgreSQL, schema_per_tenant", strategy: "schema_per_tenant", postgres: true },
] as const;

/**
 * Registers hooks that set up isolation for `combo` on one connection (PostgreSQL: a fresh database
 * that grants TEMPORARY, as PostgreSQL does by default and the test database does not), with a
 * row of the first tenant's ('a secret'), and hand it to `use`.
 */
function fixture(
  combo: (typeof combos)[number],
  use: (s: Setup, db: TestDatabase | undefined) => void,
): void {
  let db: TestDatabase | undefined;
  let s: Setup | undefined;
  beforeAll(async () => {
    if (combo.postgres) {
      db = await createTestDatabase();
      await runSql(db.superUrl, `GRANT TEMPORARY ON DATABASE "${db.name}" TO PUBLIC`);
    }
    s = await setup(combo.strategy, db);
    await asTool(s, s.tenants[0]!, "call", (q) =>
      q.query("INSERT INTO notes (title, body) VALUES ('a secret', 'x')"),
    );
    use(s, db);
  });
  afterAll(async () => {
    await s?.close();
    await db?.drop();
  });
}

describe.each(combos)("session state ends with the tool call: $name", (combo) => {
  const run = combo.postgres ? describe.skipIf(!pgUp) : describe;
  run.each(["call", "statement"] as const)("transaction: %s", (mode) => {
    let s: Setup;
    fixture(combo, (setup) => {
      s = setup;
    });

    it("a WITH HOLD cursor is not left for the next tenant", async () => {
      await asTool(s, s.tenants[0]!, mode, (q) =>
        q.query("DECLARE page CURSOR WITH HOLD FOR SELECT title FROM notes"),
      );
      const seen = await leftover(asTool(s, s.tenants[1]!, mode, (q) => q.query("FETCH ALL FROM page")));
      expect(seen).toBe("34000"); // invalid_cursor_name: there is no such cursor
    });

    it("a temporary table is not left for the next tenant", async () => {
      await asTool(s, s.tenants[0]!, mode, (q) =>
        q.query("CREATE TEMP TABLE scratch AS SELECT title FROM notes"),
      );
      const seen = await leftover(
        asTool(s, s.tenants[1]!, mode, (q) => q.query("SELECT title FROM scratch")),
      );
      expect(seen).toBe("42P01"); // undefined_table
    });

    it("a session-level setting is not left for the next tenant", async () => {
      await asTool(s, s.tenants[0]!, mode, (q) =>
        q.query("SELECT set_config('app.last_title', 'a secret', false)"),
      );
      const seen = await leftover(
        asTool(s, s.tenants[1]!, mode, (q) => q.query("SELECT current_setting('app.last_title', true) AS v")),
      );
      expect(seen).toEqual([{ v: "" }]);
    });

    it("a session-level advisory lock is not left held after the call, where it would block other tenants", async () => {
      // pg_advisory_lock outlives the transaction (only pg_advisory_xact_lock ends with it): left
      // on a pooled connection, the key stays taken for every tenant's calls on every other
      // connection until that connection closes.
      await asTool(s, s.tenants[0]!, mode, (q) => q.query("SELECT pg_advisory_lock(4242)"));
      const held = await asTool(s, s.tenants[1]!, mode, (q) =>
        q.query(
          "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        ),
      );
      expect(held.rows).toEqual([{ n: 0 }]);
      // A lock taken for the transaction still holds for the whole call, as PostgreSQL defines it.
      const inCall = await asTool(s, s.tenants[1]!, mode, (q) =>
        q.query(
          "SELECT pg_try_advisory_xact_lock(4243) AS got, (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS n",
        ),
      );
      expect(inCall.rows).toEqual([{ got: true, n: 1 }]);
    });

    it("a session-level advisory lock taken by a call that fails is not left held either", async () => {
      // ROLLBACK undoes most session state a transaction created (temporary tables, cursors,
      // settings), but not a session-level advisory lock: PostgreSQL keeps it past the rollback.
      // A tool that locks and then fails (its own throw, or a statement that errors after the lock
      // was taken) must not leave the key taken for every other tenant.
      const failing =
        mode === "call"
          ? asTool(s, s.tenants[0]!, mode, async (q) => {
              await q.query("SELECT pg_advisory_lock(4244)");
              throw new Error("the tool fails after taking the lock");
            })
          : asTool(s, s.tenants[0]!, mode, (q) =>
              q.query("SELECT pg_advisory_lock(4244), 1 / (SELECT count(*) FROM notes WHERE false)"),
            );
      await expect(failing).rejects.toThrow();
      const held = await asTool(s, s.tenants[1]!, mode, (q) =>
        q.query(
          "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        ),
      );
      expect(held.rows).toEqual([{ n: 0 }]);
    });

    it("a transaction block a tool opens is not left for the next tenant, whose writes it would hold", async () => {
      // A buggy tool that opens a transaction of its own. Under `transaction: "statement"`, left open,
      // the connection's next exchanges (any tenant's) would run inside it, uncommitted, and the
      // next ROLLBACK or failure there would discard them after they were reported as done.
      await asTool(s, s.tenants[0]!, mode, (q) => q.query("BEGIN")).catch(() => {});
      await asTool(s, s.tenants[1]!, mode, (q) =>
        q.query("INSERT INTO notes (title, body) VALUES ('kept after BEGIN', 'x')"),
      );
      await asTool(s, s.tenants[0]!, mode, (q) => q.query("ROLLBACK")).catch(() => {});
      const seen = await asTool(s, s.tenants[1]!, mode, (q) =>
        q.query("SELECT title FROM notes WHERE title = 'kept after BEGIN'"),
      );
      expect(seen.rows).toEqual([{ title: "kept after BEGIN" }]);
    });
  });
});

/**
 * `RESET ALL` leaves the role alone: a session-level `SET ROLE` (to a role the runtime role is a
 * member of; the safety checks refuse only memberships that bypass RLS or own tenant tables) would
 * make every later call on the connection, any tenant's, run as that role. PostgreSQL only: on
 * PGlite every call's binding sets the runtime role for its transaction.
 */
describe.skipIf(!pgUp).each(combos.filter((c) => c.postgres))(
  "the role ends with the tool call: $name",
  (combo) => {
    describe.each(["call", "statement"] as const)("transaction: %s", (mode) => {
      let s: Setup;
      let db: TestDatabase | undefined;
      fixture(combo, (setup, database) => {
        s = setup;
        db = database;
      });
      const superSql = (sql: string) => runSql(db?.superUrl ?? "", sql);

      it("a session-level SET ROLE is not left for the next tenant", async () => {
        const other = `${db?.runtimeRole}_other`;
        await superSql(`CREATE ROLE "${other}"; GRANT "${other}" TO "${db?.runtimeRole}"`);
        try {
          await asTool(s, s.tenants[0]!, mode, (q) => q.query(`SET ROLE "${other}"`));
          const seen = await asTool(s, s.tenants[1]!, mode, (q) =>
            q.query<{ who: string }>("SELECT current_user AS who"),
          );
          expect(seen.rows).toEqual([{ who: db?.runtimeRole }]);
        } finally {
          await superSql(`DROP OWNED BY "${other}"; DROP ROLE "${other}"`).catch(() => {});
        }
      });
    });
  },
);

/**
 * A statement-mode exchange binds its tenant with a statement prepared once per connection
 * (`tenantry_bind_…`), and SQL shares that namespace: tool SQL could replace it with one that binds
 * a tenant of its choosing, and the next calls on that connection, any tenant's, would run bound to
 * that tenant. The resets cannot undo it (`DEALLOCATE ALL` would drop Tenantry's own statements), so
 * a call whose SQL prepared or deallocated anything leaves its connection to be closed, not reused.
 */
const postgresCombos = combos.filter((c) => c.postgres);
describe.skipIf(!pgUp).each(postgresCombos)(
  "a replaced tenant binding does not outlive the call: $name",
  (combo) => {
    describe.each(["call", "statement"] as const)("transaction: %s", (mode) => {
      let s: Setup;
      fixture(combo, (setup) => {
        s = setup;
      });

      /** Ways tool SQL can run the replacement (`body`: PL/pgSQL statements) on its connection. */
      const ways: [string, (q: TenantDb, body: string) => Promise<unknown>][] = [
        ["DO", (q, body) => q.query(`DO $h$ BEGIN ${body} END $h$`)],
        // A PREPARE is not undone when its transaction rolls back, nor is DEALLOCATE, and a failed
        // statement reports no command tag.
        [
          "a DO that then fails",
          (q, body) => q.query(`DO $h$ BEGIN ${body} RAISE 'covering tracks'; END $h$`),
        ],
        // The tags are CREATE FUNCTION and SELECT. (Under transaction: "statement", the session
        // reset drops the function before a second statement could call it.)
        [
          "a temporary function",
          async (q, body) => {
            await q.query(
              `CREATE FUNCTION pg_temp.rebind() RETURNS void LANGUAGE plpgsql AS $h$ BEGIN ${body} END $h$`,
            );
            await q.query("SELECT pg_temp.rebind()");
          },
        ],
      ];

      it.each(ways)(
        "a binding replaced through %s binds no other tenant's later call",
        async (_way, replace) => {
          const victim = s.tenants[0]!;
          // The binding is prepared on the (one) connection by a first statement-mode call.
          await asTool(s, victim, "statement", (q) => q.query("SELECT 1"));
          // The replacement binds the victim whatever it is passed: its tenant id, and under
          // schema_per_tenant its schema (where the victim's policy then admits the victim's rows).
          const schemas = combo.strategy === "schema_per_tenant";
          const name = schemas ? "tenantry_bind_apptenant_id_search_path" : "tenantry_bind_apptenant_id";
          const types = schemas ? "text, text" : "text";
          const settings = [`set_config('app.tenant_id', '${victim.id}', true) AS c0`];
          if (schemas)
            settings.push(`set_config('search_path', '${schemaNameForKey(victim.key)}', true) AS c1`);
          const body = `EXECUTE 'DEALLOCATE ${name}';
        EXECUTE $p$PREPARE ${name}(${types}) AS SELECT FROM (SELECT ${settings.join(", ")}) AS b WHERE c0 IS NULL$p$;`;
          await asTool(s, s.tenants[1]!, mode, (q) => replace(q, body)).catch(() => {});
          const seen = await asTool(s, s.tenants[1]!, "statement", (q) =>
            q.query<{ title: string }>("SELECT title FROM notes"),
          );
          expect(seen.rows).toEqual([]);
        },
      );

      it("only such calls cost their connection, and a call waiting for it is served on a new one", async () => {
        const t = s.tenants[1]!;
        const pid = async () =>
          (await asTool(s, t, "statement", (q) => q.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")))
            .rows[0]?.pid;
        const first = await pid();
        await asTool(s, t, mode, (q) => q.query("SELECT count(*) FROM notes"));
        expect(await pid()).toBe(first); // an ordinary call: the connection is kept
        if (mode === "call") {
          // and so is it after an ordinary failure (a failed statement-mode exchange costs its
          // connection whatever it was: pg's pool.query destroys it)
          await expect(asTool(s, t, mode, (q) => q.query("SELECT 1 / 0"))).rejects.toThrow();
          expect(await pid()).toBe(first);
        }
        const [, waited] = await Promise.all([
          asTool(s, t, mode, (q) => q.query("DO $$ BEGIN PERFORM pg_sleep(0.05); END $$")),
          pid(), // the pool has one connection: this call waits for it
        ]);
        expect(waited).toBeDefined();
        expect(waited).not.toBe(first);
      });
    });
  },
);
