/**
 * Registering a tool is where a schema mistake shows: at startup, naming the tool, rather than
 * as a failing tools/list later.
 */
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineTool } from "../../src/tools/define-tool.js";
import { ToolRegistry } from "../../src/tools/tool-registry.js";

const tool = (name: string, input: z.ZodType) =>
  defineTool({ name, description: name, input: input as z.ZodObject, run: () => "ok" });

describe("ToolRegistry.add", () => {
  it("names the tool whose input has no JSON Schema form", () => {
    const registry = new ToolRegistry();
    for (const [name, input] of [
      ["when", z.object({ at: z.date() })],
      ["big", z.object({ n: z.bigint() })],
    ] as const) {
      expect(() => registry.add(tool(name, input))).toThrow(
        new RegExp(`^tool ${name}: its input schema has no JSON Schema form`),
      );
    }
    expect(registry.size).toBe(0);
  });

  it("names the tool whose input is not an object, and refuses a second tool of the same name", () => {
    const registry = new ToolRegistry();
    expect(() => registry.add(tool("list", z.array(z.string())))).toThrow(
      "tool list: input must be a z.object(...) schema",
    );
    registry.add(tool("echo", z.object({ text: z.string() })));
    expect(() => registry.add(tool("echo", z.object({})))).toThrow("tool echo is already registered");
    expect(registry.size).toBe(1);
  });
});
