import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { TenantStorage } from "../../src/isolation/storage/tenant-storage.js";
import { type Harness, startHarness } from "../../src/testing/harness.js";
import { defineTool } from "../../src/tools/define-tool.js";
import { notesList, notesMigrations } from "../../src/tools/demo/notes.js";
import { postJsonRpc } from "../support/replicas.js";

/*
 * A tool that never finishes must not hold what its call was given: the call fails with
 * `tool_timeout` after `server.tool_timeout_ms`, its signal is aborted, its transaction rolled back
 * (on embedded PGlite, whose one connection every other call waits for) and whatever the tool does
 * later with `ctx.db` or `ctx.storage` is refused.
 */

const TIMEOUT_MS = 300;

let resume: () => void = () => {};
const later = new Promise<void>((resolve) => {
  resume = resolve;
});
/** What the stuck tool saw and did after its call ended. */
const after: { aborted?: boolean; db?: string; storage?: string } = {};
const orphan: { db?: string; storage?: string } = {};

const tools = [
  notesList,
  defineTool({
    name: "stuck",
    description: "inserts a note, then waits for the test; then tries to write more",
    input: z.object({}),
    async run(_input, ctx) {
      ctx.signal.addEventListener("abort", () => {
        after.aborted = true;
      });
      await ctx.db.query("INSERT INTO notes (title, body) VALUES ('stuck', '')");
      await later;
      after.db = await ctx.db.query("INSERT INTO notes (title, body) VALUES ('late', '')").then(
        () => "written",
        (e: Error) => e.message,
      );
      after.storage = await ctx.storage.put("late.txt", "late").then(
        () => "written",
        (e: Error) => e.message,
      );
      return { done: true };
    },
  }),
  defineTool({
    name: "forgets_await",
    description: "returns at once, leaving work that touches ctx.db and ctx.storage for later",
    input: z.object({}),
    run(_input, ctx) {
      setTimeout(() => {
        // First use of both after the call ended: a forgotten await, a fire-and-forget.
        void ctx.db.query("INSERT INTO notes (title, body) VALUES ('orphan', '')").then(
          () => {
            orphan.db = "written";
          },
          (e: Error) => {
            orphan.db = e.message;
          },
        );
        void ctx.storage.put("orphan.txt", "x").then(
          () => {
            orphan.storage = "written";
          },
          (e: Error) => {
            orphan.storage = e.message;
          },
        );
      }, 20);
      return { returned: true };
    },
  }),
  defineTool({
    name: "hang",
    description: "never answers",
    input: z.object({}),
    run: () => new Promise<never>(() => {}),
  }),
  defineTool({
    name: "quick",
    description: "answers at once",
    input: z.object({}),
    run: () => ({ ok: true }),
  }),
];

describe("server.tool_timeout_ms", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      tenants: [{ id: "acme" }, { id: "globex" }],
      tools,
      migrations: [...notesMigrations],
      config: { server: { tool_timeout_ms: TIMEOUT_MS } },
    });
  }, 60_000);
  afterAll(async () => {
    resume();
    await h?.close();
  });

  it("fails a call that runs too long with tool_timeout, rolls it back and frees its connection", async () => {
    const started = performance.now();
    const stuck = h.tenant("acme").client.callTool({ name: "stuck", arguments: {} });
    // globex waits for PGlite's one connection, held by acme's stuck transaction, until the timeout.
    const globex = await h.tenant("globex").client.callTool({ name: "notes_list", arguments: {} });
    expect(globex.isError).toBeFalsy();
    const r = await stuck;
    expect(performance.now() - started).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
    expect(r).toMatchObject({
      isError: true,
      content: [{ type: "text", text: `tool_timeout: Tool stuck did not finish within ${TIMEOUT_MS} ms` }],
    });
    expect(after.aborted).toBe(true);
    // The insert made before the timeout was rolled back.
    const notes = await h.tenant("acme").client.callTool({ name: "notes_list", arguments: {} });
    expect(notes.structuredContent).toEqual({ notes: [] });

    await h.app.audit.flush();
    const events = await h.app.adminServices.auditLog.query({ tenant: "acme", limit: 100 });
    expect(events.find((e) => e.tool === "stuck")).toMatchObject({
      outcome: "error",
      errorCode: "tool_timeout",
    });
  });

  it("the tool running on after its call ended can write nothing more", async () => {
    resume();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(after.db).toBe("ctx.db used after the tool call ended");
    expect(after.storage).toBe("ctx.storage used after the tool call ended");
    const notes = await h.tenant("acme").client.callTool({ name: "notes_list", arguments: {} });
    expect(notes.structuredContent).toEqual({ notes: [] });
    const acme = await h.app.tenants.show("acme");
    expect(await TenantStorage.forKey(h.app.objects, acme.key).get("late.txt")).toBeUndefined();
  });

  it("work a tool leaves running after it returned cannot open a transaction or write an object", async () => {
    const r = await h.tenant("globex").client.callTool({ name: "forgets_await", arguments: {} });
    expect(r.structuredContent).toEqual({ returned: true });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(orphan).toEqual({
      db: "ctx.db used after the tool call ended",
      storage: "ctx.storage used after the tool call ended",
    });
    // Nothing holds PGlite's one connection: the next call is served.
    const notes = await h.tenant("globex").client.callTool({ name: "notes_list", arguments: {} });
    expect(notes.structuredContent).toEqual({ notes: [] });
  });

  it("a batch's calls share one timeout: three hung calls answer after one, not three", async () => {
    const call = (id: number, name: string) => ({
      jsonrpc: "2.0",
      id,
      method: "tools/call",
      params: { name, arguments: {} },
    });
    const started = performance.now();
    const res = await postJsonRpc(h.mcpUrl, h.tenant("globex").token, [
      call(1, "hang"),
      call(2, "hang"),
      call(3, "quick"),
      call(4, "hang"),
    ]);
    const answers = res.body as unknown as { id: number; result: { content: { text: string }[] } }[];
    const elapsed = performance.now() - started;
    // One timeout, not one per hung call (the messages below say which calls never started).
    expect(elapsed).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
    expect(elapsed).toBeLessThan(3 * TIMEOUT_MS);
    expect(answers.map((a) => [a.id, a.result.content[0]!.text])).toEqual([
      [1, `tool_timeout: Tool hang did not finish within ${TIMEOUT_MS} ms`],
      [2, "tool_timeout: Tool hang did not start: the request's time ran out"],
      [3, "tool_timeout: Tool quick did not start: the request's time ran out"],
      [4, "tool_timeout: Tool hang did not start: the request's time ran out"],
    ]);
  });

  it("a quick tool is untouched", async () => {
    const r = await h.tenant("acme").client.callTool({ name: "quick", arguments: {} });
    expect(r.structuredContent).toEqual({ ok: true });
  });
});
