/**
 * The request path answers synchronously when everything it needs is in memory (a token verified
 * before, the last token a connection presented, a cached tenant, the in-memory limiter, a
 * synchronous tool). These tests pin what must not change on that path: who a request is, when a
 * token stops being trusted, and what a batch mixing synchronous and asynchronous tools answers.
 */
import { Agent, request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { type Harness, startHarness } from "../../src/testing/harness.js";
import { defineTool } from "../../src/tools/define-tool.js";

/** How many times the `full_result` tool's output was serialised. */
let serialised = 0;

const tools = [
  defineTool({
    name: "who",
    description: "the caller's tenant and user, synchronously",
    input: z.object({}),
    run: (_input, ctx) => ({ tenant: ctx.tenant.tenantId, user: ctx.tenant.userId }),
  }),
  defineTool({
    name: "later",
    description: "answers after a timer",
    input: z.object({ text: z.string() }),
    run: async (input, ctx) => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      return { text: input.text, tenant: ctx.tenant.tenantId };
    },
  }),
  defineTool({
    name: "not_json",
    description: "returns what JSON cannot carry",
    input: z.object({}),
    run: () => ({ n: 1n }),
  }),
  defineTool({
    name: "not_json_result",
    description: "returns a full MCP result that JSON cannot carry",
    input: z.object({}),
    run: () => ({ content: [{ type: "text", text: "x" }], _meta: { n: 1n } }),
  }),
  defineTool({
    name: "full_result",
    description: "returns a full MCP result whose serialisation is counted",
    input: z.object({}),
    run: () => ({
      content: [
        { type: "text", text: 'quote " backslash \\ é \u2028' },
        {
          toJSON: () => {
            serialised++;
            return { type: "text", text: "counted" };
          },
        },
      ],
      _meta: { at: new Date(0) },
    }),
  }),
  defineTool({
    name: "value",
    description: "returns a plain value of the kind asked for (not a full MCP result)",
    input: z.object({ kind: z.string() }),
    run: (input) => {
      const values: Record<string, unknown> = {
        object: {
          quote: 'a"b\\c',
          counted: {
            toJSON: () => {
              serialised++;
              return [1, "two"];
            },
          },
        },
        string: 'plain "text"',
        array: [1, { a: 2 }],
        date: new Date(0),
        nothing: undefined,
        function: () => 1,
      };
      return values[input.kind];
    },
  }),
  defineTool({
    name: "boom",
    description: "throws synchronously",
    input: z.object({}),
    run: () => {
      throw new Error("kaboom");
    },
  }),
];

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  reusedSocket: boolean;
}

/** One POST /mcp over `agent` (keep-alive, one socket: every request shares a connection). */
function post(h: Harness, agent: Agent, token: string, message: unknown): Promise<Reply> {
  const body = JSON.stringify(message);
  return new Promise((resolve, reject) => {
    const req = request(
      `${h.mcpUrl}`,
      {
        method: "POST",
        agent,
        headers: {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          authorization: `Bearer ${token}`,
          "content-length": Buffer.byteLength(body),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: text ? JSON.parse(text) : undefined,
            reusedSocket: req.reusedSocket,
          });
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const call = (name: string, args: Record<string, unknown> = {}, id = 1) => ({
  jsonrpc: "2.0",
  id,
  method: "tools/call",
  params: { name, arguments: args },
});

function structured(reply: Reply): Record<string, unknown> {
  return (reply.body as { result: { structuredContent: Record<string, unknown> } }).result.structuredContent;
}

describe("the synchronous request path", () => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness({
      tenants: [{ id: "acme" }, { id: "globex" }],
      tools,
      config: { auth: { clock_tolerance_s: 0 } },
    });
  });
  afterAll(() => h.close());

  it("on one keep-alive connection, each request is the tenant of its own token", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const acme = await h.token("acme", { sub: "alice" });
      const globex = await h.token("globex", { sub: "bob" });
      const seen: string[] = [];
      for (const [i, token] of [acme, acme, globex, acme, globex, globex, acme].entries()) {
        const reply = await post(h, agent, token, call("who"));
        expect(reply.status).toBe(200);
        if (i > 0) expect(reply.reusedSocket).toBe(true);
        const who = structured(reply);
        seen.push(`${who.tenant}/${who.user}`);
      }
      expect(seen).toEqual([
        "acme/alice",
        "acme/alice",
        "globex/bob",
        "acme/alice",
        "globex/bob",
        "globex/bob",
        "acme/alice",
      ]);
    } finally {
      agent.destroy();
    }
  });

  it("a token that was accepted on a connection is refused on it once it expires", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const token = await h.issuer.auth0Token({ orgId: "acme", audience: h.audience, sub: "short" });
      const shortLived = await h.issuer.sign(
        { org_id: "acme", sub: "auth0|short", aud: h.audience, iss: `${h.issuer.issuer}/` },
        { expiresIn: 2 },
      );
      expect((await post(h, agent, token, call("who"))).status).toBe(200);
      expect((await post(h, agent, shortLived, call("who"))).status).toBe(200);
      expect((await post(h, agent, shortLived, call("who"))).status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 2100));
      const late = await post(h, agent, shortLived, call("who"));
      expect(late.reusedSocket).toBe(true);
      expect(late.status).toBe(401);
      expect(late.body).toMatchObject({ error: "invalid_token" });
      expect(late.headers["www-authenticate"]).toContain('error="invalid_token"');
    } finally {
      agent.destroy();
    }
  });

  it("a header that differs by one character from the connection's last one is verified afresh", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const token = await h.token("acme");
      expect((await post(h, agent, token, call("who"))).status).toBe(200);
      // One character of the signature, where every bit counts (the last character of a base64url
      // signature may carry padding bits only, and changing those forges nothing).
      const at = token.lastIndexOf(".") + 1;
      const forged = `${token.slice(0, at)}${token[at] === "A" ? "B" : "A"}${token.slice(at + 1)}`;
      const reply = await post(h, agent, forged, call("who"));
      expect(reply.reusedSocket).toBe(true);
      expect(reply.status).toBe(401);
    } finally {
      agent.destroy();
    }
  });

  it("a batch mixing synchronous and asynchronous tools answers every message, in order", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const token = await h.token("globex");
      const reply = await post(h, agent, token, [
        call("who", {}, 1),
        call("later", { text: "a" }, 2),
        { jsonrpc: "2.0", method: "notifications/initialized" },
        call("who", {}, 3),
        { jsonrpc: "2.0", id: 4, method: "ping" },
        call("boom", {}, 5),
        call("later", { text: "b" }, 6),
        call("not_json", {}, 7),
        call("not_json_result", {}, 8),
      ]);
      expect(reply.status).toBe(200);
      const answers = reply.body as { id: number; result: Record<string, unknown> }[];
      expect(answers.map((a) => a.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(answers[6]!.result).toEqual({
        content: [{ type: "text", text: "Tool not_json failed" }],
        isError: true,
      });
      expect(answers[7]!.result).toEqual({
        content: [{ type: "text", text: "Tool not_json_result failed" }],
        isError: true,
      });
      expect(answers[1]!.result.structuredContent).toEqual({ text: "a", tenant: "globex" });
      expect(answers[4]!.result).toEqual({
        content: [{ type: "text", text: "Tool boom failed" }],
        isError: true,
      });
      expect(answers[5]!.result.structuredContent).toEqual({ text: "b", tenant: "globex" });
    } finally {
      agent.destroy();
    }
  });

  it("a full MCP result is serialised once and answered as JSON.stringify gives it, alone or in a batch", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const token = await h.token("acme");
      const expected = {
        content: [
          { type: "text", text: 'quote " backslash \\ é \u2028' },
          { type: "text", text: "counted" },
        ],
        _meta: { at: "1970-01-01T00:00:00.000Z" },
      };
      serialised = 0;
      const alone = await post(h, agent, token, { ...call("full_result"), id: 'a"b\\' });
      expect(alone.body).toEqual({ jsonrpc: "2.0", id: 'a"b\\', result: expected });
      expect(serialised).toBe(1);
      const batch = await post(h, agent, token, [call("full_result", {}, 1), call("who", {}, 2)]);
      const answers = batch.body as { id: number; result: Record<string, unknown> }[];
      expect(answers.map((a) => a.id)).toEqual([1, 2]);
      expect(answers[0]).toEqual({ jsonrpc: "2.0", id: 1, result: expected });
      expect(answers[1]!.result.structuredContent).toMatchObject({ tenant: "acme" });
      expect(serialised).toBe(2);
    } finally {
      agent.destroy();
    }
  });

  it("a plain output is serialised once: its JSON as text and, when it is an object, as structuredContent", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const token = await h.token("acme");
      const result = async (kind: string) =>
        ((await post(h, agent, token, call("value", { kind }))).body as { result: Record<string, unknown> })
          .result;
      serialised = 0;
      const object = { quote: 'a"b\\c', counted: [1, "two"] };
      expect(await result("object")).toEqual({
        content: [{ type: "text", text: JSON.stringify(object) }],
        structuredContent: object,
      });
      expect(serialised).toBe(1);
      expect(await result("string")).toEqual({ content: [{ type: "text", text: 'plain "text"' }] });
      expect(await result("array")).toEqual({ content: [{ type: "text", text: '[1,{"a":2}]' }] });
      // structuredContent must be an object: a Date's JSON is a string, so it has none.
      expect(await result("date")).toEqual({
        content: [{ type: "text", text: '"1970-01-01T00:00:00.000Z"' }],
      });
      expect(await result("nothing")).toEqual({ content: [{ type: "text", text: "null" }] });
      // A function has no JSON form: the call fails rather than answering a text item with no text.
      expect(await result("function")).toEqual({
        content: [{ type: "text", text: "Tool value failed" }],
        isError: true,
      });
    } finally {
      agent.destroy();
    }
  });

  it("counts requests per method and status, with a latency histogram, on /metrics", async () => {
    const token = await h.token("acme");
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const scrape = async () => (await fetch(`${h.url}/metrics`)).text();
    const sample = (text: string, line: string) => {
      const found = text.split("\n").find((l) => l.startsWith(`${line} `));
      return found ? Number(found.slice(line.length + 1)) : 0;
    };
    try {
      const before = await scrape();
      for (let i = 0; i < 5; i++) expect((await post(h, agent, token, call("who"))).status).toBe(200);
      expect((await post(h, agent, "not-a-token", call("who"))).status).toBe(401);
      const after = await scrape();
      const delta = (line: string) => sample(after, line) - sample(before, line);
      expect(delta('tenantry_requests_total{method="tools/call",status="200"}')).toBe(5);
      expect(delta('tenantry_requests_total{method="POST",status="401"}')).toBe(1);
      expect(delta('tenantry_request_duration_seconds_count{method="tools/call"}')).toBe(5);
      expect(delta('tenantry_request_duration_seconds_bucket{le="+Inf",method="tools/call"}')).toBe(5);
      expect(after).toContain("# TYPE tenantry_request_duration_seconds histogram");
      expect(after).toContain("# TYPE tenantry_requests_total counter");
      // Buckets are cumulative.
      const buckets = after
        .split("\n")
        .filter(
          (l) =>
            l.startsWith('tenantry_request_duration_seconds_bucket{le="') &&
            l.includes('method="tools/call"'),
        )
        .map((l) => Number(l.split(" ")[1]));
      expect(buckets.length).toBe(14);
      for (let i = 1; i < buckets.length; i++) expect(buckets[i]).toBeGreaterThanOrEqual(buckets[i - 1]!);
      expect(delta('tenantry_rate_limit_allowed_total{tenant="acme"}')).toBe(5);
    } finally {
      agent.destroy();
    }
  });
});
