import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/harness.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";
import { structured } from "../support/tool-results.js";

/**
 * The headline: 20 tenants issue 2,000 interleaved concurrent writes and reads through the
 * MCP server (50 in flight), and every tenant sees exactly its own rows and objects. Every read
 * made during the run is checked too: it may only show the caller's own items, and must show every
 * item the caller had finished writing before the read began.
 */

const pgUp = await serviceGate("postgres");

const TENANTS = 20;
const OPS = 2000;
const IN_FLIGHT = 50;

type Isolation = "row_level_security" | "schema_per_tenant";

interface Combo {
  name: string;
  isolation: Isolation;
  postgres: boolean;
}

const combos: Combo[] = [
  { name: "PGlite, row_level_security", isolation: "row_level_security", postgres: false },
  { name: "PGlite, schema_per_tenant", isolation: "schema_per_tenant", postgres: false },
  { name: "PostgreSQL pool of 10, row_level_security", isolation: "row_level_security", postgres: true },
  { name: "PostgreSQL pool of 10, schema_per_tenant", isolation: "schema_per_tenant", postgres: true },
];

/** Runs `tasks` with at most `limit` in flight, in the given (interleaved) order. */
async function pooled(tasks: (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const task = tasks[next++]!;
      await task();
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
}

/** A deterministic shuffle (LCG), so a failure can be replayed. */
function shuffle<T>(items: T[], seed: number): T[] {
  let s = seed >>> 0;
  const rand = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

/** What one tenant has written: items whose write finished, and those merely started. */
interface Ledger {
  notesDone: Set<string>;
  notesStarted: Set<string>;
  docsDone: Set<string>;
  docsStarted: Set<string>;
}

const ledger = (): Ledger => ({
  notesDone: new Set(),
  notesStarted: new Set(),
  docsDone: new Set(),
  docsStarted: new Set(),
});

describe.each(combos)("2,000 concurrent MCP calls by 20 tenants on $name", (combo) => {
  const run = combo.postgres ? describe.skipIf(!pgUp) : describe;
  run("isolation under load", () => {
    let h: Harness;
    let db: TestDatabase | undefined;

    beforeAll(async () => {
      if (combo.postgres) db = await createTestDatabase();
      h = await startHarness({
        tenants: TENANTS,
        tools: demoTools,
        migrations: demoMigrations,
        config: {
          auth: { multi_tenant: { isolation: combo.isolation, default_rate_limit: 1_000_000 } },
          rate_limit: { max_in_flight_per_tenant: 0 },
          audit: { sink: "none" },
          ...(db ? { database: { url: db.runtimeUrl, admin_url: db.adminUrl, pool_size: 10 } } : {}),
        },
      });
    }, 120_000);

    afterAll(async () => {
      await h?.close();
      await db?.drop();
    });

    it("every tenant sees exactly its own notes and documents, during and after the run", async () => {
      const ledgers = new Map(h.tenants.map((t) => [t.id, ledger()]));
      const violations: string[] = [];
      const counts = { notes_create: 0, documents_put: 0, notes_list: 0, documents_list: 0 };
      const tasks: (() => Promise<void>)[] = [];
      for (let i = 0; i < OPS; i++) {
        const tenant = h.tenants[i % TENANTS]!;
        const l = ledgers.get(tenant.id)!;
        // Each tenant cycles through the operations: n-th call of this tenant.
        const n = Math.floor(i / TENANTS);
        switch (n % 5) {
          case 0:
          case 1: {
            counts.notes_create++;
            // Titles carry the writer's id, so a leaked row names its owner in the failure.
            const title = `${tenant.id}#${n}`;
            tasks.push(async () => {
              l.notesStarted.add(title);
              const r = structured<{ note: { title: string } }>(
                await tenant.client.callTool({
                  name: "notes_create",
                  arguments: { title, body: `body ${i}` },
                }),
              );
              expect(r.note.title).toBe(title);
              l.notesDone.add(title);
            });
            break;
          }
          case 2:
          case 3: {
            counts.documents_put++;
            // Every tenant uses the same key names: only the prefix keeps them apart.
            const key = `docs/${n}.txt`;
            tasks.push(async () => {
              l.docsStarted.add(key);
              structured(
                await tenant.client.callTool({
                  name: "documents_put",
                  arguments: { key, content: `${tenant.id}:${n}` },
                }),
              );
              l.docsDone.add(key);
            });
            break;
          }
          default: {
            if (Math.floor(n / 5) % 2 === 0) {
              counts.notes_list++;
              tasks.push(async () => {
                const before = new Set(l.notesDone);
                const r = structured<{ notes: { title: string }[] }>(
                  await tenant.client.callTool({ name: "notes_list", arguments: { limit: 1000 } }),
                );
                const seen = new Set(r.notes.map((x) => x.title));
                for (const t of seen)
                  if (!l.notesStarted.has(t)) violations.push(`${tenant.id} saw note ${t}`);
                for (const t of before) if (!seen.has(t)) violations.push(`${tenant.id} missed note ${t}`);
              });
            } else {
              counts.documents_list++;
              tasks.push(async () => {
                const before = new Set(l.docsDone);
                const r = structured<{ keys: string[] }>(
                  await tenant.client.callTool({ name: "documents_list", arguments: { limit: 1000 } }),
                );
                const seen = new Set(r.keys);
                for (const k of seen)
                  if (!l.docsStarted.has(k)) violations.push(`${tenant.id} saw object ${k}`);
                for (const k of before) if (!seen.has(k)) violations.push(`${tenant.id} missed object ${k}`);
              });
            }
          }
        }
      }
      expect(tasks).toHaveLength(OPS);

      const started = performance.now();
      await pooled(shuffle(tasks, 20240611), IN_FLIGHT);
      const seconds = (performance.now() - started) / 1000;
      console.info(
        `[${combo.name}] ${OPS} MCP calls (${JSON.stringify(counts)}), ${IN_FLIGHT} in flight: ` +
          `${seconds.toFixed(2)} s, ${Math.round(OPS / seconds)} calls/s`,
      );
      expect(violations).toEqual([]);

      // After the run: exactly the tenant's own rows and objects, nothing more, nothing less.
      for (const t of h.tenants) {
        const l = ledgers.get(t.id)!;
        const notes = structured<{ notes: { title: string; body: string }[] }>(
          await t.client.callTool({ name: "notes_list", arguments: { limit: 1000 } }),
        );
        expect(notes.notes.map((x) => x.title).sort()).toEqual([...l.notesDone].sort());
        const docs = structured<{ keys: string[] }>(
          await t.client.callTool({ name: "documents_list", arguments: { limit: 1000 } }),
        );
        expect(docs.keys.sort()).toEqual([...l.docsDone].sort());
        const one = structured<{ content: string }>(
          await t.client.callTool({ name: "documents_get", arguments: { key: "docs/2.txt" } }),
        );
        expect(one.content).toBe(`${t.id}:2`);
      }
      const total = [...ledgers.values()].reduce((a, l) => a + l.notesDone.size, 0);
      expect(total).toBe(counts.notes_create);
      // ~6-11 s alone per combo; the margin is for a loaded CI machine (PGlite runs everything serially).
    }, 180_000);
  });
});
