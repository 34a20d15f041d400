import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { storagePrefixForKey } from "../../src/isolation/names.js";
import { type Harness, startHarness } from "../../src/testing/harness.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";

/**
 * Hostile input through the MCP server: storage keys built to escape the tenant prefix, and tenant
 * ids that only a careless mapping would confuse. Whatever a tenant sends, it observes exactly its
 * own documents and notes, and the backend holds nothing outside the tenants' prefixes.
 */

type CallResult = Awaited<ReturnType<Client["callTool"]>>;

const IDS = ["org_AbC", "org_abc", "tenant-a", "tenanta"];

const HOSTILE_KEYS = [
  "../org_abc/secret.txt",
  "..",
  "a/../../b",
  "/etc/passwd",
  "a\\b",
  "a\u0000b",
  "./x",
  "x/./y",
  "%2e%2e/x",
  "t/1/x",
  "_tenantry/markers/1.json",
  "x".repeat(1100),
  "",
];

const keyArb = fc.oneof(
  fc.constantFrom(...HOSTILE_KEYS),
  fc.constantFrom("a", "a/b", "a/b/c.txt", "A", "docs/x", "ü/ß", "a b"),
  fc
    .array(fc.constantFrom("a", "b", "..", ".", "", "x y", "\\", "%2f", "é"), { minLength: 1, maxLength: 4 })
    .map((segments) => segments.join("/")),
);

type Op =
  | { kind: "put"; t: number; key: string; content: string }
  | { kind: "get"; t: number; key: string }
  | { kind: "list"; t: number; prefix: string | undefined };

const tenant = fc.nat({ max: IDS.length - 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant("put" as const),
    t: tenant,
    key: keyArb,
    content: fc.string({ maxLength: 20 }),
  }),
  fc.record({ kind: fc.constant("get" as const), t: tenant, key: keyArb }),
  fc.record({
    kind: fc.constant("list" as const),
    t: tenant,
    prefix: fc.option(fc.oneof(keyArb, fc.constantFrom("a/", "../", "/", "t/")), { nil: undefined }),
  }),
);

function text(r: CallResult): string {
  const first = (r.content as { type: string; text?: string }[])[0];
  return first?.text ?? "";
}

describe("hostile keys and ids through the MCP server (PGlite, row_level_security)", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      tenants: IDS.map((id) => ({ id })),
      tools: demoTools,
      migrations: demoMigrations,
      config: {
        auth: { multi_tenant: { default_rate_limit: 1_000_000 } },
        rate_limit: { max_in_flight_per_tenant: 0 },
        audit: { sink: "none" },
      },
    });
  }, 60_000);
  afterAll(async () => h?.close());

  async function listAll(client: Client, prefix?: string): Promise<string[]> {
    const keys: string[] = [];
    let cursor: string | undefined;
    do {
      const r = await client.callTool({
        name: "documents_list",
        arguments: {
          ...(prefix !== undefined ? { prefix } : {}),
          ...(cursor ? { cursor } : {}),
          limit: 1000,
        },
      });
      if (r.isError) throw new Error(text(r));
      const page = r.structuredContent as { keys: string[]; nextCursor?: string };
      keys.push(...page.keys);
      cursor = page.nextCursor;
    } while (cursor);
    return keys;
  }

  it("no sequence of puts, gets and lists with hostile keys observes another tenant's documents (property)", async () => {
    const models = new Map<string, Map<string, string>>(IDS.map((id) => [id, new Map()]));
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 15 }), async (ops) => {
        for (const o of ops) {
          const t = h.tenants[o.t]!;
          const model = models.get(t.id)!;
          switch (o.kind) {
            case "put": {
              const r = await t.client.callTool({
                name: "documents_put",
                arguments: { key: o.key, content: o.content },
              });
              if (r.isError) {
                // Refused keys are refused as such, and write nothing.
                expect(text(r)).toMatch(/invalid_storage_key|Invalid arguments/);
              } else {
                model.set(o.key, o.content);
              }
              break;
            }
            case "get": {
              const r = await t.client.callTool({ name: "documents_get", arguments: { key: o.key } });
              const expected = model.get(o.key);
              if (expected === undefined) {
                expect(r.isError).toBe(true);
              } else {
                expect(r.structuredContent).toEqual({ key: o.key, content: expected });
              }
              break;
            }
            case "list": {
              const r = await t.client.callTool({
                name: "documents_list",
                arguments: o.prefix === undefined ? {} : { prefix: o.prefix },
              });
              if (!r.isError) {
                const keys = (r.structuredContent as { keys: string[] }).keys;
                const expected = [...model.keys()].filter((k) => k.startsWith(o.prefix ?? "")).sort();
                expect([...keys].sort()).toEqual(expected.slice(0, 100));
              }
              break;
            }
          }
        }
        for (const t of h.tenants) {
          expect((await listAll(t.client)).sort()).toEqual([...models.get(t.id)!.keys()].sort());
        }
      }),
      { numRuns: 40 },
    );

    // Behind the tenants' backs: every object lies under one of their prefixes (or is a marker).
    const prefixes = await Promise.all(
      IDS.map(async (id) => storagePrefixForKey((await h.app.tenants.show(id)).key)),
    );
    let cursor: string | undefined;
    do {
      const page = await h.app.objects.list(
        "",
        cursor === undefined ? { limit: 1000 } : { cursor, limit: 1000 },
      );
      for (const key of page.keys) {
        expect(key.startsWith("_tenantry/markers/") || prefixes.some((p) => key.startsWith(p))).toBe(true);
      }
      cursor = page.nextCursor;
    } while (cursor !== undefined);
  }, 120_000);

  it("a token naming a look-alike or malformed tenant gets no session at all", async () => {
    for (const id of ["org_ABC", "ORG_abc", "tenant_a", "org_abc/../org_AbC", "org_abc ", "tenant-a\u0000"]) {
      const token = await h.token(id);
      await expect(h.connect(token)).rejects.toThrow();
    }
  });

  it("notes stay apart between ids that differ only in case or punctuation", async () => {
    for (const t of h.tenants) {
      const r = await t.client.callTool({ name: "notes_create", arguments: { title: t.id, body: "mine" } });
      expect(r.isError).toBeFalsy();
    }
    for (const t of h.tenants) {
      const r = await t.client.callTool({ name: "notes_list", arguments: {} });
      const titles = (r.structuredContent as { notes: { title: string }[] }).notes.map((n) => n.title);
      expect(titles).toEqual([t.id]);
    }
  });
});
