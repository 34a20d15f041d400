import { context, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";

/**
 * OpenTelemetry spans through the vendor-neutral API. With no SDK registered every call is a
 * no-op (the API's default tracer), so the request path pays nothing measurable; register an SDK
 * (`NodeSDK`, or a `TracerProvider` with `trace.setGlobalTracerProvider`) and spans appear:
 * one SERVER span per MCP request, and one INTERNAL span per tool call, active while the tool
 * runs so that the tool's own spans nest under it.
 */
export const tracer = trace.getTracer("tenantry");

export function startRequestSpan(): Span {
  return tracer.startSpan("tenantry.mcp.request", { kind: SpanKind.SERVER });
}

/** Ends a request span with what the audit event also records (never the token or the input). */
export function endRequestSpan(
  span: Span,
  facts: {
    tenantId: string | null;
    method: string;
    tool: string | null;
    status: number;
    outcome: string;
    errorCode: string | null;
  },
): void {
  if (span.isRecording()) {
    span.setAttributes({
      "tenantry.tenant_id": facts.tenantId ?? "",
      "mcp.method.name": facts.method,
      "http.response.status_code": facts.status,
      "tenantry.outcome": facts.outcome,
      ...(facts.tool ? { "mcp.tool.name": facts.tool } : {}),
      ...(facts.errorCode ? { "error.type": facts.errorCode } : {}),
    });
    if (facts.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
  }
  span.end();
}

/** Runs a tool inside an active span named after it, a child of the request's span. */
export function inToolSpan<T>(
  tool: string,
  tenantId: string | undefined,
  request: Span,
  fn: () => Promise<T>,
): Promise<T> {
  const parent = trace.setSpan(context.active(), request);
  return tracer.startActiveSpan(
    `tenantry.tool ${tool}`,
    { kind: SpanKind.INTERNAL },
    parent,
    async (span) => {
      if (span.isRecording()) {
        span.setAttributes({ "mcp.tool.name": tool, "tenantry.tenant_id": tenantId ?? "" });
      }
      try {
        return await fn();
      } catch (error) {
        span.setStatus({ code: SpanStatusCode.ERROR });
        throw error;
      } finally {
        span.end();
      }
    },
  );
}
