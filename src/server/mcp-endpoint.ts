import type { IncomingMessage, ServerResponse } from "node:http";
import { SUPPORTED_PROTOCOL_VERSIONS } from "@modelcontextprotocol/sdk/types.js";
import type { Span } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { AuditEvent, AuditSink } from "../audit/audit-event.js";
import { TenantryError } from "../errors.js";
import type { InFlightLimiter, Release } from "../limits/concurrency.js";
import { emissionIntervalUs } from "../limits/gcra.js";
import { appendRateLimitHeaders } from "../limits/headers.js";
import { type RateLimitDecision, type RateLimiter, rateLimitError } from "../limits/rate-limiter.js";
import type { TenantScope } from "../tenancy/context.js";
import { isJsonContentType, readBody } from "./body.js";
import { type MapperContext, toHttpError } from "./error-mapper.js";
import { classify, type Incoming, type JsonRpcResponse, RPC, responseText, rpcError } from "./json-rpc.js";
import {
  type DispatchNotes,
  type DispatchState,
  type McpDispatcher,
  recordedName,
} from "./mcp-dispatcher.js";
import type { ServerMetrics } from "./metrics.js";
import type { AdmissionPipeline, Admitted, Identified } from "./pipeline.js";
import type { RequestIds } from "./request-id.js";
import { type HeaderList, sendHttpError, sendJson, sendJsonText } from "./respond.js";
import type { SessionStore } from "./sessions.js";
import { endRequestSpan, startRequestSpan } from "./tracing.js";

export interface McpEndpointDeps {
  pipeline: AdmissionPipeline;
  dispatcher: McpDispatcher;
  limiter: RateLimiter;
  inFlight: InFlightLimiter;
  defaultRateLimit: number;
  sessions: SessionStore | undefined;
  maxBodyBytes: number;
  allowedOrigins: ReadonlySet<string>;
  mapper: MapperContext;
  audit: AuditSink;
  metrics: ServerMetrics;
  ids: RequestIds;
  log: Logger;
}

const SESSION_HEADER = "mcp-session-id";

/** The audit queue has no room for the event of an identified request: it is refused before any work. */
function auditFull(): TenantryError {
  return new TenantryError("service_unavailable", "the audit log is behind; retry shortly", {
    details: { headers: { "Retry-After": "1" } },
  });
}

let lastMs = Number.NaN;
let lastIso = "";
/** `new Date(ms).toISOString()`, remembered for the millisecond: requests arrive many per millisecond. */
function isoTime(ms: number): string {
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

/** The wall-clock time (ISO) at which a request began that has been running `elapsedMs`. */
function startedAt(elapsedMs: number): string {
  return isoTime(Math.floor(Date.now() - elapsedMs));
}

/** Most messages one JSON-RPC batch may hold; a larger batch is refused before any work. */
export const MAX_BATCH_MESSAGES = 100;

/** Notes for one message of a batch, filled in from the message until the dispatcher knows more. */
function requestNotes(message: { method: string; params?: unknown } | undefined): DispatchNotes {
  const params = message?.params as { name?: unknown } | undefined;
  return {
    method: message ? recordedName(message.method) : "?",
    tool:
      message?.method === "tools/call" && typeof params?.name === "string" ? recordedName(params.name) : null,
    outcome: "ok",
    errorCode: null,
  };
}

/**
 * `/mcp`: the request pipeline in the order DESIGN.md gives, one direction, no back and forth —
 * request limits → authenticate → identify → admit → in-flight cap → rate-limit → dispatch → audit.
 */
export class McpEndpoint {
  readonly #d: McpEndpointDeps;

  constructor(deps: McpEndpointDeps) {
    this.#d = deps;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const d = this.#d;
    const started = performance.now();
    const span = startRequestSpan();
    const requestId = d.ids.next(req.headers["x-request-id"]);
    const notes: DispatchNotes = { method: req.method ?? "?", tool: null, outcome: "ok", errorCode: null };
    let admitted: Admitted | undefined;
    let release: Release | undefined;
    // Room for this request's audit event is reserved once the request is admitted, before any
    // work: no room → 503, never a lost event. A request refused before any work (authentication,
    // admission, the in-flight cap, the rate limit) gives its room back and is recorded within the
    // refused requests' bounded share (see #record): however many are refused — junk tokens, an
    // unknown tenant's, a tenant far over its rate — they cannot take the room of requests that work.
    let reserved = false;
    let working = false;
    const identified: Identified = {};
    try {
      if (req.method === "GET" || (req.method === "DELETE" && !d.sessions)) {
        // No server-initiated SSE stream is offered; stateless servers have no session to delete.
        notes.method = `HTTP ${req.method}`;
        throw new TenantryError("method_not_allowed", `${req.method} /mcp is not supported by this server`, {
          details: { headers: { Allow: d.sessions ? "POST, DELETE" : "POST" } },
        });
      }
      if (req.method !== "POST" && req.method !== "DELETE") {
        throw new TenantryError("method_not_allowed", "use POST", {
          details: { headers: { Allow: d.sessions ? "POST, DELETE" : "POST" } },
        });
      }
      this.#checkOrigin(req);
      if (req.method === "POST") {
        if (!isJsonContentType(req.headers["content-type"])) {
          throw new TenantryError("unsupported_media_type", "Content-Type must be application/json");
        }
        const declared = req.headers["content-length"];
        if (declared !== undefined && Number(declared) > d.maxBodyBytes) {
          throw new TenantryError("payload_too_large", `the body is larger than ${d.maxBodyBytes} bytes`);
        }
      }
      const version = req.headers["mcp-protocol-version"];
      if (typeof version === "string" && !SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
        throw new TenantryError("bad_request", `unsupported MCP-Protocol-Version ${version.slice(0, 40)}`);
      }

      // Each stage answers synchronously when it can (cached token, cached tenant, in-memory
      // limiter), so a warm request runs start to finish without waiting on the event loop.
      const admitting = d.pipeline.admit(req, identified);
      admitted = admitting instanceof Promise ? await admitting : admitting;
      reserved = d.audit.reserve();
      if (!reserved) throw auditFull();
      const headers: HeaderList = ["X-Request-Id", requestId];
      // The in-flight cap first: a request it refuses does no work, so it spends no rate-limit token.
      release = this.#acquire(admitted.scope);
      const limiting = this.#limit(admitted, headers);
      if (limiting !== undefined) await limiting;
      working = true;

      if (req.method === "DELETE") {
        notes.method = "session/delete";
        const sid = req.headers[SESSION_HEADER];
        if (typeof sid !== "string" || !d.sessions!.delete(sid, admitted.scope)) {
          throw new TenantryError("session_not_found", "no such session");
        }
        res.writeHead(200, headers).end();
        return;
      }
      const body = await readBody(req, d.maxBodyBytes);
      const posting = this.#post(
        req,
        res,
        body,
        admitted,
        headers,
        requestId,
        notes,
        started,
        span.isRecording() ? span : undefined,
      );
      if (posting !== undefined) await posting;
    } catch (error) {
      if (reserved && !working) {
        d.audit.unreserve();
        reserved = false;
      }
      const mapped = toHttpError(error, d.mapper);
      notes.outcome = mapped.status === 500 ? "error" : "denied";
      notes.errorCode = mapped.body.error;
      if (mapped.status === 500) d.log.error({ err: error, request_id: requestId }, "request failed");
      if (error instanceof TenantryError && error.code === "session_not_found") {
        sendJson(res, 404, rpcError(null, RPC.sessionNotFound, "Session not found"), {
          "X-Request-Id": requestId,
        });
      } else {
        sendHttpError(res, mapped, { "X-Request-Id": requestId });
      }
    } finally {
      release?.();
      const scope = admitted?.scope ?? identified.scope;
      if (!notes.batched) this.#record(scope, notes, started, requestId, res.statusCode, reserved);
      endRequestSpan(span, {
        tenantId: scope?.kind === "tenant" ? scope.tenant.tenantId : null,
        method: notes.method,
        tool: notes.tool,
        status: res.statusCode,
        outcome: notes.outcome,
        errorCode: notes.errorCode,
      });
    }
  }

  /** Parses and dispatches a POST body; returns a promise only when a message had to wait (an async tool). */
  #post(
    req: IncomingMessage,
    res: ServerResponse,
    body: Buffer,
    admitted: Admitted,
    headers: HeaderList,
    requestId: string,
    notes: DispatchNotes,
    started: number,
    span: Span | undefined,
  ): Promise<void> | undefined {
    const d = this.#d;
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {
      notes.outcome = "error";
      notes.errorCode = "parse_error";
      sendJsonText(res, 400, JSON.stringify(rpcError(null, RPC.parseError, "Parse error")), headers);
      return;
    }
    const batch = Array.isArray(parsed);
    const messages = batch ? (parsed as unknown[]) : [parsed];
    if (messages.length === 0 || messages.length > MAX_BATCH_MESSAGES) {
      notes.outcome = "error";
      notes.errorCode = "invalid_request";
      const why =
        messages.length === 0 ? "empty batch" : `a batch may hold at most ${MAX_BATCH_MESSAGES} messages`;
      sendJsonText(res, 400, JSON.stringify(rpcError(null, RPC.invalidRequest, why)), headers);
      return;
    }
    const incoming = messages.map(classify);
    if (d.sessions) {
      const isInit = incoming.some((m) => m.kind === "request" && m.message.method === "initialize");
      if (isInit) {
        if (messages.length > 1) {
          sendJsonText(
            res,
            400,
            JSON.stringify(rpcError(null, RPC.invalidRequest, "initialize must be sent alone")),
            headers,
          );
          return;
        }
        headers.push("Mcp-Session-Id", d.sessions.create(admitted.scope));
      } else {
        const sid = req.headers[SESSION_HEADER];
        if (typeof sid !== "string") {
          const error = rpcError(
            null,
            RPC.connectionClosed,
            "Bad Request: Mcp-Session-Id header is required",
          );
          sendJsonText(res, 400, JSON.stringify(error), headers);
          return;
        }
        if (!d.sessions.touch(sid, admitted.scope)) throw new TenantryError("session_not_found");
      }
    }
    const state: DispatchState = {
      scope: admitted.scope,
      record: admitted.record,
      requestId,
      log: d.log,
      notes,
      ...(span ? { span } : {}),
    };
    let requests = 0;
    for (const m of incoming) if (m.kind === "request") requests++;
    if (requests > 1) return this.#postBatch(res, incoming, requests, admitted, state, headers, started);
    const responses: JsonRpcResponse[] = [];
    for (let i = 0; i < incoming.length; i++) {
      const answer = this.#answer(incoming[i]!, state);
      // The first message that has to wait moves the rest of the batch onto the async path.
      if (answer instanceof Promise) {
        return this.#postAsync(res, answer, incoming, i, state, responses, batch, headers);
      }
      if (answer !== undefined) responses.push(answer);
    }
    this.#respond(res, responses, batch, headers);
    return undefined;
  }

  /**
   * A batch holding several requests. Each request message is one operation: it spends one
   * rate-limit token and gets its own audit event, so that a batch neither multiplies a tenant's
   * allowance nor hides calls from the audit log. The HTTP request already spent one token and
   * reserved one audit slot; the others are taken here, before any work — no room in the audit
   * queue is 503, too few tokens is 429 for the whole batch — and every request's event is
   * recorded here, in order, however the batch ends (one that never ran as refused).
   */
  async #postBatch(
    res: ServerResponse,
    incoming: readonly Incoming[],
    requests: number,
    admitted: Admitted,
    state: DispatchState,
    headers: HeaderList,
    started: number,
  ): Promise<void> {
    const d = this.#d;
    // The request's span and event stand for the whole batch (each call has its own tool span,
    // event and metrics), also when the batch is refused here.
    state.notes.method = "batch";
    let reserved = 0;
    while (reserved < requests - 1 && d.audit.reserve()) reserved++;
    if (reserved < requests - 1) {
      for (; reserved > 0; reserved--) d.audit.unreserve();
      throw auditFull();
    }
    // From here every request message has a slot: the request's own (first) and the ones above
    // (given back if the rate limit refuses the batch).
    state.notes.batched = true;
    state.span?.setAttribute("mcp.batch.size", requests);
    // The batch's calls share one tool-time budget: a batch of slow calls lasts one timeout.
    const shared: DispatchState = { ...state, budget: {} };
    const notes: DispatchNotes[] = [];
    for (const m of incoming) if (m.kind === "request") notes.push(requestNotes(m.message));
    let ran = 0;
    let failed: number | undefined;
    let limited = false;
    try {
      // The other calls' tokens in one decision, all or none (one store round trip); its
      // RateLimit headers replace the request's own.
      // Names are at even indexes: a value (the client's request id) may spell a name too.
      for (let i = 0; i < headers.length; i += 2) {
        if (headers[i] === "RateLimit-Policy") {
          headers.splice(i, 4);
          break;
        }
      }
      const limiting = this.#limit(admitted, headers, requests - 1, requests);
      if (limiting !== undefined) await limiting;
      limited = true;
      const responses: JsonRpcResponse[] = [];
      for (const m of incoming) {
        const own: DispatchState = {
          ...shared,
          notes: m.kind === "request" ? (notes[ran++] as DispatchNotes) : requestNotes(undefined),
        };
        const answer = this.#answer(m, own);
        if (answer !== undefined) responses.push(answer instanceof Promise ? await answer : answer);
      }
      this.#respond(res, responses, true, headers);
    } catch (error) {
      failed = toHttpError(error, d.mapper).status;
      const code = error instanceof TenantryError ? error.code : "internal";
      // The request that was running when the batch failed, and every one after it, did not complete.
      for (let k = Math.max(0, ran - 1); k < notes.length; k++) {
        const n = notes[k] as DispatchNotes;
        if (k >= ran || n.outcome === "ok") {
          n.outcome = code === "internal" ? "error" : "denied";
          n.errorCode = code;
        }
      }
      throw error;
    } finally {
      const status = failed ?? res.statusCode;
      // One start time for the whole batch: its events keep their order in the log.
      const at = startedAt(performance.now() - started);
      // Refused by the rate limit, before any work: the batch gives back every slot (the request's
      // own and the ones above), and its events go to the refused share like any refusal's.
      if (!limited) for (let k = 0; k < requests; k++) d.audit.unreserve();
      for (const n of notes) this.#record(admitted.scope, n, started, state.requestId, status, limited, at);
    }
  }

  /** One message's answer: a response, a promise of one (an asynchronous tool), or none (a notification). */
  #answer(m: Incoming, state: DispatchState): JsonRpcResponse | Promise<JsonRpcResponse> | undefined {
    if (m.kind === "request") return this.#d.dispatcher.request(m.message, state);
    if (m.kind === "invalid") return rpcError(m.id, RPC.invalidRequest, m.reason);
    if (m.kind === "notification") state.notes.method = recordedName(m.message.method);
    return undefined;
  }

  async #postAsync(
    res: ServerResponse,
    pending: Promise<JsonRpcResponse>,
    incoming: readonly Incoming[],
    at: number,
    state: DispatchState,
    responses: JsonRpcResponse[],
    batch: boolean,
    headers: HeaderList,
  ): Promise<void> {
    responses.push(await pending);
    for (let i = at + 1; i < incoming.length; i++) {
      const answer = this.#answer(incoming[i]!, state);
      if (answer !== undefined) responses.push(await answer);
    }
    this.#respond(res, responses, batch, headers);
  }

  #respond(res: ServerResponse, responses: JsonRpcResponse[], batch: boolean, headers: HeaderList): void {
    if (responses.length === 0) {
      res.writeHead(202, headers).end();
      return;
    }
    const text = batch ? `[${responses.map(responseText).join(",")}]` : responseText(responses[0]!);
    sendJsonText(res, 200, text, headers);
  }

  #checkOrigin(req: IncomingMessage): void {
    const origin = req.headers.origin;
    if (origin === undefined || this.#d.allowedOrigins.has(origin)) return;
    throw new TenantryError("forbidden", "this Origin may not call the MCP endpoint");
  }

  /**
   * Rate-limits `cost` requests of a tenant at once (all or none), adding the RateLimit headers; a
   * promise only when the store is remote. `batch`: the size of the batch they belong to.
   */
  #limit(admitted: Admitted, headers: HeaderList, cost = 1, batch = 1): Promise<void> | undefined {
    if (admitted.scope.kind !== "tenant") return undefined;
    const d = this.#d;
    const tenantId = admitted.scope.tenant.tenantId;
    const limit = admitted.record?.config.rateLimit ?? d.defaultRateLimit;
    const deciding = d.limiter.decide(tenantId, limit, cost);
    if (!(deciding instanceof Promise)) return this.#decided(tenantId, limit, deciding, headers, cost, batch);
    return deciding.then((decision) => this.#decided(tenantId, limit, decision, headers, cost, batch));
  }

  #decided(
    tenantId: string,
    limit: number,
    decision: RateLimitDecision,
    headers: HeaderList,
    cost: number,
    batch: number,
  ): undefined {
    this.#d.metrics.rateLimit(tenantId, decision.allowed, cost);
    if (!decision.allowed) {
      // A batch of more calls than the tenant's whole capacity can never pass: say so.
      const never = batch > decision.limit && decision.reason === "rate_limited";
      // A batch refused here already spent its HTTP request's token, and its retry spends one again
      // before these `cost` are decided: it fits one emission interval after they alone would.
      const refused =
        batch > cost && !never && decision.reason === "rate_limited"
          ? { ...decision, retryAfterMs: decision.retryAfterMs + emissionIntervalUs(limit) / 1000 }
          : decision;
      throw rateLimitError(
        refused,
        never
          ? `A batch of ${batch} calls is more than this tenant may make at once (${decision.limit}); send smaller batches.`
          : undefined,
      );
    }
    appendRateLimitHeaders(headers, decision);
    return undefined;
  }

  #acquire(scope: TenantScope): Release | undefined {
    if (scope.kind !== "tenant") return undefined;
    const release = this.#d.inFlight.tryAcquire(scope.tenant.tenantId);
    if (!release) {
      throw new TenantryError("too_many_concurrent", "too many requests in flight for this tenant", {
        details: { headers: { "Retry-After": "1" } },
      });
    }
    return release;
  }

  #record(
    scope: TenantScope | undefined,
    notes: DispatchNotes,
    started: number,
    requestId: string,
    status: number,
    reserved: boolean,
    at?: string,
  ) {
    const d = this.#d;
    const latencyMs = performance.now() - started;
    d.metrics.request(notes.method, status, latencyMs);
    const tenant = scope?.kind === "tenant" ? scope.tenant : undefined;
    if (d.log.isLevelEnabled("debug")) {
      d.log.debug(
        {
          tenant_id: tenant?.tenantId,
          request_id: requestId,
          method: notes.method,
          tool: notes.tool,
          status,
          latency_ms: latencyMs,
        },
        "mcp request",
      );
    }
    const event: AuditEvent = {
      at: at ?? startedAt(latencyMs),
      kind: "request",
      tenantId: tenant?.tenantId ?? null,
      userId: tenant?.userId ?? (scope?.kind === "global" ? `admin:${scope.adminId}` : null),
      impersonatedBy: tenant?.impersonation ? `admin:${tenant.impersonation.adminId}` : null,
      action: notes.method,
      tool: notes.tool,
      outcome: notes.outcome,
      errorCode: notes.errorCode,
      latencyMs: Math.round(latencyMs * 1000) / 1000,
      requestId,
      replica: d.ids.replica,
      details: null,
    };
    if (!reserved) {
      // Refused before any work: recorded in the refused share of the queue, else counted.
      if (!d.audit.enqueueRefused(event)) d.metrics.auditUnrecorded();
      return;
    }
    try {
      d.audit.enqueue(event, { reserved });
    } catch (err) {
      // Only a slot accounting error could get here (every reserved slot is used or given back
      // once, see test/audit/audit-slots): the event of a request that did work would be lost.
      d.log.error({ err, request_id: requestId }, "audit event lost: no reserved slot for it");
    }
  }
}
