/** One audit event: an MCP request or an admin action. This shape is the audit log's public format. */
export interface AuditEvent {
  /** ISO-8601 time the request started or the action was taken. */
  at: string;
  kind: "request" | "admin";
  tenantId: string | null;
  userId: string | null;
  /** `admin:<id>` when a global admin acted as the tenant. */
  impersonatedBy: string | null;
  /** MCP method (`tools/call`), or the admin action (`tenant.suspend`). */
  action: string;
  tool: string | null;
  outcome: "ok" | "error" | "denied";
  errorCode: string | null;
  latencyMs: number | null;
  requestId: string | null;
  replica: string;
  details: Record<string, unknown> | null;
}

/**
 * Where events go. Request events are queued (`reserve` + `enqueue`) and written in batches off
 * the hot path; admin actions are written at once (`write`) and must not resolve before the event
 * is durable.
 */
export interface AuditSink {
  /**
   * Reserves room in the queue for one request event, before the request does any work. `false`
   * when the queue is full: the server then answers 503 rather than serve a request it could not
   * record. Every `true` must be followed by exactly one `enqueue(event, { reserved: true })`.
   */
  reserve(): boolean;
  /** Gives back a slot taken by `reserve` that no event will use (a request refused after all). */
  unreserve(): void;
  /**
   * Queues a request event, into a slot taken by `reserve` when `reserved` (this never fails),
   * else into a free slot; throws `service_unavailable` when there is none.
   */
  enqueue(event: AuditEvent, options?: { reserved?: boolean }): void;
  /**
   * Queues the event of a request refused before any work (a bad token, a wrong method or content
   * type, an unknown or suspended tenant, a tenant over its rate or its requests in flight), which
   * holds no reserved slot. Such events may fill only a bounded share of the queue, so that refused
   * requests cannot deny the others their room. `false` when that share or the queue is full: the
   * event is then only counted, and a later summary event (action `audit.unrecorded`) says how many
   * were not recorded one by one, per error code and per tenant. Never throws.
   */
  enqueueRefused(event: AuditEvent): boolean;
  /** Writes an event now (admin actions, impersonation); rejects if it could not be written. */
  write(event: AuditEvent): Promise<void>;
  /** Writes everything queued; rejects if a batch could not be written (its events stay queued). */
  flush(): Promise<void>;
  /** Flushes (retrying briefly) and stops the background writer. */
  close(): Promise<void>;
  /** Events waiting to be written. */
  readonly pending: number;
  /** True when `reserve` would refuse now. */
  readonly full: boolean;
}
