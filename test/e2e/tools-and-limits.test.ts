/**
 * Per-tenant tool access and rate limits over HTTP. A tool a tenant may not use is
 * indistinguishable from one that does not exist — in `tools/call` and in `tools/list` — and a
 * tenant over its rate gets 429 with the rate-limit headers while its neighbours carry on.
 */
import { McpError } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { defineTool } from "../../src/tools/define-tool.js";
import { whoami } from "../../src/tools/demo/whoami.js";
import { callToolMessage, expectRefused, post } from "./helpers.js";

const billing = defineTool({
  name: "billing_export",
  description: "Exports this organization's invoices",
  input: z.object({}),
  run: (_input, ctx) => ({ exportedFor: ctx.tenant.tenantId }),
});

const RESTRICTED = "restricted";
const OPEN = "open";
const LIMITED = "limited";
const NEIGHBOUR = "neighbour";

describe("tool access and rate limits over HTTP", () => {
  // Through the public `tenantry/testing` harness: what a tool author would write.
  let server: Harness;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    server = await startHarness({
      tools: [whoami, billing],
      config: { rate_limit: { burst: 0 } },
      tenants: [{ id: RESTRICTED, allowedTools: ["whoami"] }, { id: OPEN }, { id: NEIGHBOUR }],
    });
    for (const t of server.tenants) tokens[t.id] = t.token;
    // Not a harness tenant: the harness's own client would already have spent two of its five requests.
    await server.app.tenants.create({ id: "e2e" }, { id: LIMITED, name: "Limited", rateLimit: 5 });
    tokens[LIMITED] = await server.token(LIMITED);
  });

  afterAll(async () => {
    await server?.close();
  });

  it("the harness hands each tenant a connected client that sees only its own tenant", async () => {
    for (const t of [RESTRICTED, OPEN, NEIGHBOUR]) {
      const me = await server.tenant(t).client.callTool({ name: "whoami", arguments: {} });
      expect(me.structuredContent).toMatchObject({ tenantId: t, userId: `auth0|user-of-${t}` });
    }
  });

  describe("a denied tool is indistinguishable from an unknown one", () => {
    /** The JSON-RPC error of a raw `tools/call`, with the tool's name replaced by a placeholder. */
    async function rawCallError(tenant: string, name: string): Promise<unknown> {
      const message = callToolMessage(name);
      const response = await post(server, { token: tokens[tenant]!, body: message });
      expect(response.status).toBe(200);
      const reply = (await response.json()) as { id: unknown; error?: { message: string } };
      expect(reply.id).toBe(message.id);
      expect(reply.error, JSON.stringify(reply)).toBeDefined();
      return JSON.parse(JSON.stringify({ ...reply, id: "<id>" }).replaceAll(name, "<tool>"));
    }

    /** The SDK client's error for `callTool`, as code + message with the name replaced. */
    async function sdkCallError(tenant: string, name: string): Promise<{ code: number; message: string }> {
      const client = await server.connect(tokens[tenant]!);
      try {
        const error = await client.callTool({ name, arguments: {} }).then(
          (result) => {
            throw new Error(`expected an error, got ${JSON.stringify(result)}`);
          },
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(McpError);
        const { code, message } = error as McpError;
        return { code, message: message.replaceAll(name, "<tool>") };
      } finally {
        await client.close();
      }
    }

    it("the tool exists and works for a tenant allowed to use it", async () => {
      const client = await server.connect(tokens[OPEN]!);
      const result = await client.callTool({ name: billing.name, arguments: {} });
      expect(result.structuredContent).toEqual({ exportedFor: OPEN });
      const listed = (await client.listTools()).tools.map((t) => t.name);
      expect(listed.sort()).toEqual([billing.name, "whoami"].sort());
      await client.close();
    });

    it("tools/call: same JSON-RPC error, word for word, over raw HTTP", async () => {
      const denied = await rawCallError(RESTRICTED, billing.name);
      const unknown = await rawCallError(RESTRICTED, "no_such_tool");
      expect(denied).toEqual(unknown);
      // Also the same as an unknown tool for a tenant that may use everything.
      expect(await rawCallError(OPEN, "no_such_tool")).toEqual(unknown);
      expect(denied).toMatchObject({ jsonrpc: "2.0", error: { code: -32602 } });
    });

    it("tools/call: same McpError through the SDK client", async () => {
      const denied = await sdkCallError(RESTRICTED, billing.name);
      const unknown = await sdkCallError(RESTRICTED, "no_such_tool");
      expect(denied).toEqual(unknown);
    });

    it("tools/list does not show the denied tool; the allowed one still works", async () => {
      const client = await server.connect(tokens[RESTRICTED]!);
      const listed = (await client.listTools()).tools.map((t) => t.name);
      expect(listed).toEqual(["whoami"]);
      const me = await client.callTool({ name: "whoami", arguments: {} });
      expect(me.structuredContent).toMatchObject({ tenantId: RESTRICTED });
      await client.close();
    });

    it("changing allowed_tools takes effect on the next request, in list and call alike", async () => {
      const client = await server.connect(tokens[RESTRICTED]!);
      try {
        await server.app.tenants.update({ id: "e2e" }, RESTRICTED, {
          allowedTools: ["whoami", billing.name],
        });
        expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual([billing.name, "whoami"]);
        const ok = await client.callTool({ name: billing.name, arguments: {} });
        expect(ok.structuredContent).toEqual({ exportedFor: RESTRICTED });

        await server.app.tenants.update({ id: "e2e" }, RESTRICTED, { allowedTools: ["whoami"] });
        expect((await client.listTools()).tools.map((t) => t.name)).toEqual(["whoami"]);
        await expect(client.callTool({ name: billing.name, arguments: {} })).rejects.toBeInstanceOf(McpError);
      } finally {
        await client.close();
      }
    });
  });

  describe("rate limit", () => {
    it("rate_limit 5, burst 0: exactly 5 successes, then 429 rate_limited; the neighbour keeps succeeding", async () => {
      const call = (tenant: string) =>
        post(server, { token: tokens[tenant]!, body: callToolMessage("whoami") });
      for (let i = 1; i <= 5; i++) {
        const ok = await call(LIMITED);
        expect(ok.status, `request ${i}`).toBe(200);
        expect(ok.headers.get("ratelimit-policy")).toBe('"default";q=5;w=60');
        expect(ok.headers.get("ratelimit")).toMatch(new RegExp(`^"default";r=${5 - i};t=\\d+$`));
        expect(ok.headers.get("retry-after")).toBeNull();
        await ok.body?.cancel();
      }
      for (let i = 0; i < 2; i++) {
        const denied = await call(LIMITED);
        const headers = denied.headers;
        await expectRefused(denied, 429, "rate_limited");
        const retryAfter = Number(headers.get("retry-after"));
        expect(Number.isInteger(retryAfter)).toBe(true);
        // One request's worth of capacity comes back every 60 / 5 = 12 s.
        expect(retryAfter).toBeGreaterThanOrEqual(1);
        expect(retryAfter).toBeLessThanOrEqual(12);
        expect(headers.get("ratelimit-policy")).toBe('"default";q=5;w=60');
        expect(headers.get("ratelimit")).toMatch(/^"default";r=0;t=\d+$/);

        const neighbour = await call(NEIGHBOUR);
        expect(neighbour.status).toBe(200);
        expect(neighbour.headers.get("ratelimit-policy")).toBe('"default";q=100;w=60');
        const reply = (await neighbour.json()) as { result: { structuredContent: { tenantId: string } } };
        expect(reply.result.structuredContent.tenantId).toBe(NEIGHBOUR);
      }
      // The limited tenant's own users are all limited together: the limit is per tenant.
      const colleague = await server.token(LIMITED, { sub: "auth0|colleague" });
      await expectRefused(
        await post(server, { token: colleague, body: callToolMessage("whoami") }),
        429,
        "rate_limited",
      );
    });
  });
});
