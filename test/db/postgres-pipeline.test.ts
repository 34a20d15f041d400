/**
 * PostgresDatabase sends BEGIN and its prelude (the tenant binding) in the same write as the first
 * statement of a transaction, without waiting for them. These tests pin why that is safe: no
 * statement's result leaves a transaction whose BEGIN or binding failed, the binding never
 * outlives its transaction on a pooled connection, and the statements still run in one
 * transaction, in order.
 */
import { describe, expect, it } from "vitest";
import { PostgresDatabase } from "../../src/db/postgres.js";
import { withTestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";

const pgUp = await serviceGate("postgres");

describe.skipIf(!pgUp)("PostgresDatabase transactions, pipelined", () => {
  const testDb = withTestDatabase();
  const open = (poolSize = 1) =>
    new PostgresDatabase(testDb().adminUrl, { poolSize, statementTimeoutMs: 5000 });

  it("binds the first statement: it sees the setting the prelude made", async () => {
    const db = open();
    try {
      const seen = await db.transaction(
        async (tx) =>
          (await tx.query<{ t: string }>("SELECT current_setting('app.tenant_id', true) AS t")).rows,
        { begin: "SELECT set_config('app.tenant_id', 'acme', true)" },
      );
      expect(seen).toEqual([{ t: "acme" }]);
      // Transaction-local: the pooled connection (pool of one) carries nothing to the next user.
      const after = await db.query<{ t: string | null }>(
        "SELECT current_setting('app.tenant_id', true) AS t",
      );
      expect(after.rows[0]!.t ?? "").toBe("");
    } finally {
      await db.close();
    }
  });

  it("a failed prelude fails the transaction; the statement sent with it hands back no rows", async () => {
    const db = open();
    try {
      let rows: unknown;
      const attempt = db.transaction(
        async (tx) => {
          rows = (await tx.query("SELECT 'secret' AS s")).rows;
          return rows;
        },
        { begin: "SELECT set_config('app.tenant_id', 'acme', true), 1/0" },
      );
      await expect(attempt).rejects.toMatchObject({ code: "22012" }); // division_by_zero
      expect(rows).toBeUndefined();
      // The connection went back clean and usable.
      expect((await db.query<{ ok: number }>("SELECT 1 AS ok")).rows).toEqual([{ ok: 1 }]);
    } finally {
      await db.close();
    }
  });

  it("a transaction that runs no statement still reports a failed prelude", async () => {
    const db = open();
    try {
      await expect(
        db.transaction(async () => "nothing", { begin: "SELECT * FROM no_such_table" }),
      ).rejects.toMatchObject({ code: "42P01" });
    } finally {
      await db.close();
    }
  });

  it("statements run in one transaction, in order: a later failure rolls back the earlier writes", async () => {
    const db = open(2);
    try {
      await db.exec("CREATE TABLE pipelined (n int PRIMARY KEY)");
      await expect(
        db.transaction(async (tx) => {
          await tx.query("INSERT INTO pipelined VALUES (1)");
          await tx.query("INSERT INTO pipelined VALUES (2)");
          await tx.query("INSERT INTO pipelined VALUES (1)"); // duplicate key
        }),
      ).rejects.toMatchObject({ code: "23505" });
      expect((await db.query("SELECT n FROM pipelined")).rows).toEqual([]);
      const kept = await db.transaction(async (tx) => {
        const [a, b] = await Promise.all([
          tx.query("INSERT INTO pipelined VALUES (3) RETURNING n"),
          tx.query("INSERT INTO pipelined VALUES (4) RETURNING n"),
        ]);
        return [a.rows[0], b.rows[0]];
      });
      expect(kept).toEqual([{ n: 3 }, { n: 4 }]);
      expect((await db.query("SELECT n FROM pipelined ORDER BY n")).rows).toEqual([{ n: 3 }, { n: 4 }]);
    } finally {
      await db.close();
    }
  });

  it("many concurrent transactions on a small pool each see only their own binding", async () => {
    const db = open(3);
    try {
      const tenants = Array.from({ length: 60 }, (_, i) => `t${i}`);
      const seen = await Promise.all(
        tenants.map((t) =>
          db.transaction(
            async (tx) => {
              const first = await tx.query<{ t: string }>("SELECT current_setting('app.tenant_id') AS t");
              await new Promise((resolve) => setTimeout(resolve, Math.random() * 5));
              const second = await tx.query<{ t: string }>("SELECT current_setting('app.tenant_id') AS t");
              return `${first.rows[0]!.t}/${second.rows[0]!.t}`;
            },
            { begin: `SELECT set_config('app.tenant_id', '${t}', true)` },
          ),
        ),
      );
      expect(seen).toEqual(tenants.map((t) => `${t}/${t}`));
    } finally {
      await db.close();
    }
  });

  it("bound(): the binding holds for its statement only, and a failed binding runs no statement", async () => {
    const db = open(1);
    try {
      const binding = {
        name: "test_bind_tenant",
        text: "SELECT FROM (SELECT set_config('app.tenant_id', $1, true) AS c0) AS b WHERE c0 IS NULL",
        values: ["acme"],
      };
      const seen = await db.bound<{ t: string }>(
        binding,
        "SELECT current_setting('app.tenant_id', true) AS t",
      );
      expect(seen.rows).toEqual([{ t: "acme" }]);
      const after = await db.query<{ t: string | null }>(
        "SELECT current_setting('app.tenant_id', true) AS t",
      );
      expect(after.rows[0]!.t ?? "").toBe("");

      await db.exec("CREATE TABLE bound_writes (n int)");
      const failing = {
        name: "test_bind_fails",
        text: "SELECT FROM (SELECT 1/0 AS c0) AS b WHERE c0 IS NULL",
        values: [],
      };
      await expect(
        db.bound(failing, "INSERT INTO bound_writes VALUES (1) RETURNING n"),
      ).rejects.toMatchObject({
        code: "22012",
      });
      expect((await db.query("SELECT n FROM bound_writes")).rows).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it("bound(): a connection whose first exchange failed is not taken as having parsed the resets", async () => {
    const db = open(1);
    try {
      const binding = {
        name: "test_bind_first_fails",
        text: "SELECT FROM (SELECT set_config('app.tenant_id', $1, true) AS c0) AS b WHERE c0 IS NULL",
        values: ["acme"],
        reset: ["RESET ALL"],
      };
      // The first exchange on the connection: the statement fails before the reset's Parse, which
      // PostgreSQL skips, though pg counts it as submitted. Only dropping the connection (pool.query
      // does, on any error) keeps the next exchange from Binding a reset that was never parsed.
      await expect(db.bound(binding, "SELECT 1/0")).rejects.toMatchObject({ code: "22012" });
      const seen = await db.bound<{ t: string }>(
        binding,
        "SELECT current_setting('app.tenant_id') AS t, set_config('app.note', 'left', false)",
      );
      expect(seen.rows).toMatchObject([{ t: "acme" }]);
      // The reset ran with it: the session-level setting did not stay on the connection.
      const after = await db.query<{ v: string | null }>("SELECT current_setting('app.note', true) AS v");
      expect(after.rows[0]!.v ?? "").toBe("");
    } finally {
      await db.close();
    }
  });

  it("bound(): on a connection that parsed the binding, each statement returns exactly what the same query returns alone", async () => {
    const db = open(1); // one connection: after the first exchange, every one is sent as a single encoded write
    try {
      await db.exec("CREATE TABLE bound_kinds (n int, t text, at timestamptz, b bytea, j jsonb, ok boolean)");
      const binding = {
        name: "test_bind_kinds",
        text: "SELECT FROM (SELECT set_config('app.tenant_id', $1, true) AS c0) AS b WHERE c0 IS NULL",
        values: ["acme"],
        // A reset that returns rows: none of them may reach the statement's result.
        reset: ["SELECT 42 AS leaked", "RESET ALL"],
      };
      const params = [
        7,
        "naïve ☃ 'quoted'",
        new Date("2026-11-30T12:00:00.123Z"),
        Buffer.from([0, 1, 255]),
        { a: [1, "x"] },
        true,
      ];
      const cases: Array<[string, unknown[]]> = [
        ["INSERT INTO bound_kinds VALUES ($1, $2, $3, $4, $5, $6) RETURNING *", params],
        ["INSERT INTO bound_kinds VALUES ($1, $2, $3, $4, $5, $6)", [8, null, null, null, null, null]],
        ["SELECT n, t, at, b, j, ok FROM bound_kinds ORDER BY n", []],
        ["UPDATE bound_kinds SET ok = false WHERE n > $1", [0]],
        ["SELECT current_setting('app.tenant_id', true) AS t, $1::int[] AS arr", [[1, 2, 3]]],
        ["SELECT 1 WHERE false", []],
        ["", []],
      ];
      for (let round = 0; round < 2; round++) {
        for (const [text, values] of cases) {
          const bound = await db.bound(binding, text, values);
          const alone = await db.transaction(async (tx) => {
            await tx.query("SELECT set_config('app.tenant_id', 'acme', true)");
            return text === "" ? { rows: [], rowCount: 0 } : tx.query(text, values);
          });
          if (text.startsWith("INSERT")) {
            await db.exec("DELETE FROM bound_kinds WHERE ctid = (SELECT max(ctid) FROM bound_kinds)"); // undo the twin
          }
          expect({ text, rows: bound.rows, rowCount: bound.rowCount }).toEqual({
            text,
            rows: alone.rows,
            rowCount: alone.rowCount,
          });
        }
      }
      // A failing statement fails alone; the next exchange (on a new connection: pg-pool drops the
      // one that failed) parses the binding again and succeeds.
      await expect(db.bound(binding, "SELECT 1/0")).rejects.toMatchObject({ code: "22012" });
      expect(
        (await db.bound<{ t: string }>(binding, "SELECT current_setting('app.tenant_id') AS t")).rows,
      ).toEqual([{ t: "acme" }]);
      expect(
        (await db.bound<{ t: string }>(binding, "SELECT current_setting('app.tenant_id') AS t")).rows,
      ).toEqual([{ t: "acme" }]);
    } finally {
      await db.close();
    }
  });
});
