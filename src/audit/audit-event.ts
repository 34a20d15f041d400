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

/** Where events go. `write` for admin actions must not resolve before the event is durable. */
export interface AuditSink {
  /** Queues a request event; throws `service_unavailable` when the queue is full. */
  enqueue(event: AuditEvent): void;
  /** Writes an event now (admin actions, impersonation). */
  write(event: AuditEvent): Promise<void>;
  /** Writes everything queued. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** An audit sink that keeps nothing (`[audit] sink = "none"`). */
export const nullAuditSink: AuditSink = {
  enqueue() {},
  async write() {},
  async flush() {},
  async close() {},
};
