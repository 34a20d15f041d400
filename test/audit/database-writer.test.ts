import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AuditEvent } from "../../src/audit/audit-event.js";
import { databaseAuditReader } from "../../src/audit/audit-query.js";
import { databaseWriter } from "../../src/audit/sinks.js";
import { parseConfig } from "../../src/config/load.js";
import { ensurePgliteRuntimeRole, runCoreMigrations } from "../../src/db/core-migrations.js";
import type { Database } from "../../src/db/database.js";
import { openDatabases } from "../../src/db/open.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";

const pgUp = await serviceGate("postgres");

/** Text that array literals, JSON and SQL each treat specially. */
const HOSTILE = [
  "NULL",
  "null",
  "",
  '"',
  "\\",
  '\\"',
  "{a,b}",
  "a,b",
  "{}",
  "'; DROP TABLE tenantry_audit; --",
  "line\nbreak\ttab\rreturn",
  "ünïcødé ✓ 🦀",
  " leading and trailing ",
  "nul\u0000inside",
];

function event(i: number, text: string, details: AuditEvent["details"]): AuditEvent {
  return {
    at: new Date(Date.UTC(2026, 10, 30, 0, 0, 0, i)).toISOString(),
    kind: "request",
    tenantId: `tenant-${i}`,
    userId: text,
    impersonatedBy: i % 2 ? null : text,
    action: "tools/call",
    tool: text,
    outcome: "error",
    errorCode: text,
    latencyMs: i % 3 ? i / 7 : null,
    requestId: text,
    replica: text,
    details,
  };
}

/** NUL, which PostgreSQL cannot store, is kept as U+FFFD. */
const stored = (text: string) => text.replaceAll("\u0000", "\uFFFD");

/** What a JSON value reads back as: NUL as U+FFFD in keys and strings, -0 as 0 (JSON has no -0). */
function storedJson(value: unknown): Record<string, unknown> {
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") return stored(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === "object") {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [stored(k), walk(x)]));
    }
    return Object.is(v, -0) ? 0 : v;
  };
  return walk(value) as Record<string, unknown>;
}

function engines(): [string, () => Promise<{ db: Database; close(): Promise<void> }>][] {
  const list: [string, () => Promise<{ db: Database; close(): Promise<void> }>][] = [
    [
      "PGlite",
      async () => {
        const dbs = await openDatabases(parseConfig({}, "test", {}), { memory: true });
        await ensurePgliteRuntimeRole(dbs.admin, dbs.runtimeRole as string);
        await runCoreMigrations(dbs.admin, dbs.runtimeRoleName);
        return { db: dbs.admin, close: () => dbs.close() };
      },
    ],
  ];
  if (pgUp) {
    list.push([
      "PostgreSQL",
      async () => {
        const pgdb: TestDatabase = await createTestDatabase();
        const config = parseConfig(
          { database: { url: pgdb.runtimeUrl, admin_url: pgdb.adminUrl, pool_size: 2 } },
          "test",
          {},
        );
        const dbs = await openDatabases(config);
        await runCoreMigrations(dbs.admin, dbs.runtimeRoleName);
        return {
          db: dbs.admin,
          close: async () => {
            await dbs.close();
            await pgdb.drop();
          },
        };
      },
    ]);
  }
  return list;
}

describe.each(engines())("the database audit writer on %s", (_name, open) => {
  let env: { db: Database; close(): Promise<void> };
  beforeAll(async () => {
    env = await open();
  }, 120_000);
  afterAll(async () => {
    await env?.close();
  });

  it("stores every column of a batch exactly, whatever the text", async () => {
    await env.db.query("TRUNCATE tenantry_audit");
    const details = (text: string, i: number) => ({ text, [text]: i, nested: { list: [text, 1, null] } });
    const events = HOSTILE.map((text, i) => event(i, text, i % 4 === 0 ? null : details(text, i)));
    await databaseWriter(env.db)(events);
    const read = await databaseAuditReader(env.db).query({ limit: 1000 });
    expect(read).toEqual(
      HOSTILE.map((text, i) => event(i, stored(text), i % 4 === 0 ? null : details(stored(text), i))),
    );
  });

  it("round-trips arbitrary strings and JSON details (property)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            text: fc.string({ unit: "binary" }),
            details: fc.option(fc.dictionary(fc.string(), fc.jsonValue()), { nil: null }),
          }),
          { minLength: 1, maxLength: 8 },
        ),
        async (rows) => {
          await env.db.query("TRUNCATE tenantry_audit");
          const events = rows.map((r, i) => event(i, r.text, r.details));
          await databaseWriter(env.db)(events);
          const read = await databaseAuditReader(env.db).query({ limit: 1000 });
          const expected = rows.map((r, i) =>
            event(i, stored(r.text), r.details === null ? null : storedJson(r.details)),
          );
          expect(read).toEqual(expected);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("stores details as JSON.stringify would write them (a Date as its ISO string)", async () => {
    await env.db.query("TRUNCATE tenantry_audit");
    const when = new Date(Date.UTC(2026, 10, 30, 12, 0, 0));
    await databaseWriter(env.db)([event(1, "x", { when, "k\u0000": ["v\u0000", when] } as never)]);
    const [read] = await databaseAuditReader(env.db).query({ limit: 10 });
    expect(read?.details).toEqual({ when: when.toISOString(), "k\uFFFD": ["v\uFFFD", when.toISOString()] });
  });

  it("stores a batch of many slices whole and in order", async () => {
    await env.db.query("TRUNCATE tenantry_audit");
    const events = Array.from({ length: 300 }, (_, i) => event(i, `text ${i}`, i % 2 ? { i } : null));
    await databaseWriter(env.db)(events);
    expect(await databaseAuditReader(env.db).query({ limit: 1000 })).toEqual(events);
  });

  it("writes a batch all or nothing", async () => {
    await env.db.query("TRUNCATE tenantry_audit");
    const good = event(1, "ok", null);
    const bad = { ...event(2, "bad", null), at: "not a time" };
    await expect(databaseWriter(env.db)([good, bad])).rejects.toThrow();
    expect(await databaseAuditReader(env.db).query({ limit: 10 })).toEqual([]);
  });
});

describe("the database audit writer's encoding", () => {
  it("lets other work run while it encodes a large batch, then sends it as one statement", async () => {
    const sent: unknown[][] = [];
    const fake = {
      kind: "postgres",
      query: async (_text: string, params: unknown[]) => {
        sent.push(params);
        return { rows: [], rowCount: 0 };
      },
    } as unknown as Database;
    let ranMeanwhile = 0;
    const tick = () => {
      ranMeanwhile++;
      if (sent.length === 0) setImmediate(tick);
    };
    setImmediate(tick);
    const events = Array.from({ length: 500 }, (_, i) => event(i, "x", null));
    await databaseWriter(fake)(events);
    // Encoded 64 events at a time, with the event loop's other work in between: not in one go.
    expect(ranMeanwhile).toBeGreaterThanOrEqual(Math.floor(500 / 64));
    expect(sent).toHaveLength(1);
    const ids = String(sent[0]?.[2]).slice(1, -1).split(",");
    expect(ids).toEqual(events.map((e) => `"${e.tenantId}"`));
  });
});

describe.skipIf(!pgUp)("the database audit writer on PostgreSQL, prepared", () => {
  it("prepares its statement once per connection and reuses it", async () => {
    const pgdb = await createTestDatabase();
    const config = parseConfig(
      { database: { url: pgdb.runtimeUrl, admin_url: pgdb.adminUrl, pool_size: 2 } },
      "test",
      {},
    );
    const dbs = await openDatabases(config);
    try {
      await runCoreMigrations(dbs.admin, dbs.runtimeRoleName);
      const write = databaseWriter(dbs.admin);
      // One statement at a time: the pool hands back the connection it was just given.
      for (let i = 0; i < 3; i++) await write([event(i, "x", null)]);
      const prepared = await dbs.admin.query<{ name: string }>(
        "SELECT name FROM pg_prepared_statements WHERE statement LIKE 'INSERT INTO tenantry_audit%'",
      );
      expect(prepared.rows).toEqual([{ name: "tenantry_audit_insert" }]);
      expect(await databaseAuditReader(dbs.admin).query({ limit: 10 })).toHaveLength(3);
    } finally {
      await dbs.close();
      await pgdb.drop();
    }
  });
});
