/**
 * MCP conformance details that the SDK client does not exercise on its own: what a `tools/list`
 * schema means to a client that validates with it, and how the endpoint answers messages that are
 * not requests.
 */
import { AjvJsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/ajv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { type Harness, startHarness } from "../../src/testing/harness.js";
import { defineTool } from "../../src/tools/define-tool.js";

const tools = [
  defineTool({
    name: "pair",
    description: "takes a [string, number] tuple",
    input: z.object({ pair: z.tuple([z.string(), z.number()]) }),
    run: (input) => ({ pair: input.pair }),
  }),
];

async function post(h: Harness, message: unknown): Promise<{ status: number; text: string }> {
  const response = await fetch(h.mcpUrl, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      authorization: `Bearer ${h.tenants[0]!.token}`,
    },
    body: JSON.stringify(message),
  });
  return { status: response.status, text: await response.text() };
}

describe("MCP conformance", () => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness({ tenants: 1, tools });
  });
  afterAll(() => h.close());

  it("a tools/list inputSchema names its JSON Schema dialect, and means under it what the tool accepts", async () => {
    const { tools: listed } = await h.tenants[0]!.client.listTools();
    const schema = listed.find((t) => t.name === "pair")!.inputSchema;
    // MCP 2025-11-25: a schema without $schema is read as JSON Schema 2020-12, where a draft-07
    // tuple (`items: [...]`) is not even a valid schema. The converter writes draft-07, so it says so,
    // as the SDK's own McpServer does.
    expect(schema.$schema).toBe("http://json-schema.org/draft-07/schema#");
    const validate = new AjvJsonSchemaValidator().getValidator(schema);
    expect(validate({ pair: ["a", 1] }).valid).toBe(true);
    expect(validate({ pair: [1, "a"] }).valid).toBe(false);
    expect(validate({ pair: ["a", 1, 2] }).valid).toBe(false);
  });

  it("a client's error response is accepted with 202 and no body, also without an id (MCP) or with id null (JSON-RPC)", async () => {
    const error = { code: -32700, message: "Parse error" };
    for (const message of [
      { jsonrpc: "2.0", id: 7, error },
      { jsonrpc: "2.0", error },
      { jsonrpc: "2.0", id: null, error },
      [
        { jsonrpc: "2.0", error },
        { jsonrpc: "2.0", method: "notifications/initialized" },
      ],
    ]) {
      expect(await post(h, message), JSON.stringify(message)).toEqual({ status: 202, text: "" });
    }
    // A result needs the id of the request it answers; without one it is no message at all.
    const invalid = await post(h, { jsonrpc: "2.0", result: {} });
    expect(invalid.status).toBe(200);
    expect(JSON.parse(invalid.text)).toMatchObject({ id: null, error: { code: -32600 } });
  });
});
