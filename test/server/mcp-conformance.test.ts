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
});
