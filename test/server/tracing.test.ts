import { trace } from "@opentelemetry/api";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/harness.js";
import { whoami } from "../../src/tools/demo/whoami.js";

describe("OpenTelemetry spans (when the user registers an SDK)", () => {
  const exporter = new InMemorySpanExporter();
  let h: Harness;
  beforeAll(async () => {
    trace.setGlobalTracerProvider(
      new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }),
    );
    h = await startHarness({ tenants: 2, tools: [whoami] });
  });
  afterAll(async () => {
    await h?.close();
    trace.disable();
  });

  it("records one request span per MCP request and one span per tool call, each with its tenant", async () => {
    exporter.reset();
    for (const t of h.tenants) await t.client.callTool({ name: "whoami", arguments: {} });
    const spans = exporter.getFinishedSpans();
    const tools = spans.filter((s) => s.name === "tenantry.tool whoami");
    expect(tools.map((s) => s.attributes["tenantry.tenant_id"]).sort()).toEqual(["tenant-0", "tenant-1"]);
    const calls = spans.filter(
      (s) => s.name === "tenantry.mcp.request" && s.attributes["mcp.method.name"] === "tools/call",
    );
    expect(calls).toHaveLength(2);
    for (const span of calls) {
      expect(span.attributes["mcp.tool.name"]).toBe("whoami");
      expect(span.attributes["http.response.status_code"]).toBe(200);
      expect(span.attributes["tenantry.outcome"]).toBe("ok");
    }
  });

  it("a tool call's span is a child of its request's span, in the same trace", async () => {
    exporter.reset();
    await h.tenants[0]!.client.callTool({ name: "whoami", arguments: {} });
    const spans = exporter.getFinishedSpans();
    const tool = spans.find((s) => s.name === "tenantry.tool whoami");
    const request = spans.find(
      (s) => s.name === "tenantry.mcp.request" && s.attributes["mcp.method.name"] === "tools/call",
    );
    expect(tool?.spanContext().traceId).toBe(request?.spanContext().traceId);
    expect(tool?.parentSpanContext?.spanId).toBe(request?.spanContext().spanId);
  });

  it("a JSON-RPC batch is one request span named batch, with its size, over one tool span per call", async () => {
    exporter.reset();
    const res = await fetch(h.mcpUrl, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        authorization: `Bearer ${h.tenants[0]!.token}`,
      },
      body: JSON.stringify(
        [1, 2, 3].map((id) => ({
          jsonrpc: "2.0",
          id,
          method: "tools/call",
          params: { name: "whoami", arguments: {} },
        })),
      ),
    });
    expect(res.status).toBe(200);
    const spans = exporter.getFinishedSpans();
    const requests = spans.filter((s) => s.name === "tenantry.mcp.request");
    expect(requests).toHaveLength(1);
    expect(requests[0]!.attributes["mcp.method.name"]).toBe("batch");
    expect(requests[0]!.attributes["mcp.batch.size"]).toBe(3);
    expect(requests[0]!.attributes["tenantry.tenant_id"]).toBe("tenant-0");
    const tools = spans.filter((s) => s.name === "tenantry.tool whoami");
    expect(tools).toHaveLength(3);
    for (const tool of tools) expect(tool.parentSpanContext?.spanId).toBe(requests[0]!.spanContext().spanId);
  });

  it("records refusals with their error code and no token", async () => {
    exporter.reset();
    const res = await fetch(h.mcpUrl, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer not-a-token" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    expect(res.status).toBe(401);
    const [span] = exporter.getFinishedSpans().filter((s) => s.name === "tenantry.mcp.request");
    expect(span?.attributes["error.type"]).toBe("invalid_token");
    expect(JSON.stringify(span?.attributes)).not.toContain("not-a-token");
  });
});
