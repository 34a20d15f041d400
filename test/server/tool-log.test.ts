import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { type Harness, startHarness } from "../../src/testing/harness.js";
import { defineTool } from "../../src/tools/define-tool.js";
import { captureLogs } from "../support/logs.js";
import { postJsonRpc } from "../support/replicas.js";

/*
 * `ctx.log` is bound to the tenant (DESIGN: "ctx.log — all bound to the tenant"): every line a
 * tool writes carries its tenant_id and the request_id echoed in X-Request-Id, and a tool's
 * failure is logged with them, so an operator can find a tenant's call in the log.
 */

const tools = [
  defineTool({
    name: "say",
    description: "logs one line",
    input: z.object({ word: z.string() }),
    run: async ({ word }, ctx) => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      ctx.log.info({ word }, "tool says");
      return { ok: true };
    },
  }),
  defineTool({
    name: "boom",
    description: "throws",
    input: z.object({}),
    run: () => {
      throw new Error("kaboom");
    },
  }),
];

describe("ctx.log of a tool call", () => {
  const { logger, lines } = captureLogs();
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ tenants: 2, tools, logger });
  });
  afterAll(async () => {
    await h?.close();
  });

  async function call(tenant: number, name: string, args: Record<string, unknown>, requestId: string) {
    const token = await h.token(`tenant-${tenant}`);
    const res = await postJsonRpc(
      h.mcpUrl,
      token,
      { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name, arguments: args } },
      { "x-request-id": requestId },
    );
    expect(res.status).toBe(200);
    return res.headers.get("x-request-id");
  }

  it("carries the tenant and request of its own call, also when calls of two tenants overlap", async () => {
    await Promise.all([
      call(0, "say", { word: "zero" }, "req-zero"),
      call(1, "say", { word: "one" }, "req-one"),
    ]);
    const said = lines.filter((l) => l.msg === "tool says");
    expect(said).toHaveLength(2);
    expect(said.find((l) => l.word === "zero")).toMatchObject({
      tenant_id: "tenant-0",
      request_id: "req-zero",
    });
    expect(said.find((l) => l.word === "one")).toMatchObject({
      tenant_id: "tenant-1",
      request_id: "req-one",
    });
  });

  it("logs a tool's failure with its tenant and request", async () => {
    await call(1, "boom", {}, "req-boom");
    const failed = lines.find((l) => l.msg === "tool failed");
    expect(failed).toMatchObject({
      tenant_id: "tenant-1",
      request_id: "req-boom",
      tool: "boom",
      err: { message: "kaboom" },
    });
  });
});
