import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { whoami } from "../../src/tools/demo/whoami.js";
import { mcp, toolResult } from "../admin/helpers.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";

const pgUp = await serviceGate("postgres");

/**
 * Request events carry text the caller chose (the JSON-RPC method, the tool name). PostgreSQL
 * refuses a NUL character in `text` and `jsonb`; one such event must not sink the batch it is in
 * (every tenant's events, retried forever until the queue is full and the server refuses all).
 */
function setups(): [
  string,
  () => Promise<{ config: Record<string, Record<string, unknown>>; drop(): Promise<void> }>,
][] {
  const list: [
    string,
    () => Promise<{ config: Record<string, Record<string, unknown>>; drop(): Promise<void> }>,
  ][] = [["PGlite", async () => ({ config: {}, drop: async () => {} })]];
  if (pgUp) {
    list.push([
      "PostgreSQL",
      async () => {
        const db: TestDatabase = await createTestDatabase();
        return {
          config: { database: { url: db.runtimeUrl, admin_url: db.adminUrl, pool_size: 2 } },
          drop: () => db.drop(),
        };
      },
    ]);
  }
  return list;
}

describe.each(setups())("hostile text in request events, on %s", (_name, setup) => {
  let h: Harness;
  let drop: () => Promise<void>;
  beforeAll(async () => {
    const s = await setup();
    drop = s.drop;
    h = await startHarness({ tenants: 2, tools: [whoami], config: s.config });
  }, 120_000);
  afterAll(async () => {
    await h?.close();
    await drop?.();
  });

  it("a NUL in the method or tool name does not stop other tenants' events from being written", async () => {
    const [attacker, victim] = h.tenants;
    const evilMethod = `tools/call\u0000${"x".repeat(100_000)}`;
    expect((await mcp(h, attacker!.token, evilMethod)).status).toBe(200);
    expect((await mcp(h, attacker!.token, "tools/call", { name: "who\u0000ami" })).status).toBe(200);
    toolResult(await mcp(h, victim!.token, "tools/call", { name: "whoami", arguments: {} }));
    await h.app.audit.flush();
    expect(h.app.audit.pending).toBe(0);

    const events = await h.app.adminServices.auditLog.query({ limit: 1000 });
    const calls = events.filter((e) => e.kind === "request" && e.action.startsWith("tools/call"));
    const byAttacker = calls.filter((e) => e.tenantId === attacker!.id);
    expect(byAttacker.map((e) => e.action)).toEqual([
      `tools/call\uFFFD${"x".repeat(128 - 11)}`,
      "tools/call",
    ]);
    expect(byAttacker[1]).toMatchObject({ tool: "who\uFFFDami", outcome: "denied" });
    expect(calls.filter((e) => e.tenantId === victim!.id)).toEqual([
      expect.objectContaining({ action: "tools/call", tool: "whoami", outcome: "ok" }),
    ]);
  });
});
