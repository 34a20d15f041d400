import { TenantryError } from "../errors.js";
import type { AuditEvent, AuditSink } from "./audit-event.js";

/** Where a batch of events is written. Must be all-or-nothing. */
export type WriteBatch = (events: readonly AuditEvent[]) => Promise<void>;

export interface BatchingOptions {
  queueSize: number;
  batchSize: number;
  flushIntervalMs: number;
  onError?: (error: unknown, dropped: number) => void;
}

/**
 * Request events go through a bounded queue and are written in batches off the hot path. When the
 * queue is full, `enqueue` throws `service_unavailable` so the server answers 503 rather than
 * dropping events. A failed batch goes back to the head of the queue and is retried.
 */
export class BatchingAuditSink implements AuditSink {
  readonly #write: WriteBatch;
  readonly #o: BatchingOptions;
  #queue: AuditEvent[] = [];
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  #closed = false;

  constructor(write: WriteBatch, options: BatchingOptions) {
    this.#write = write;
    this.#o = options;
  }

  /** Events waiting to be written. */
  get pending(): number {
    return this.#queue.length;
  }

  /** True when a request event would be refused now. */
  get full(): boolean {
    return this.#queue.length >= this.#o.queueSize;
  }

  enqueue(event: AuditEvent): void {
    if (this.#queue.length >= this.#o.queueSize) {
      throw new TenantryError("service_unavailable", "the audit queue is full");
    }
    this.#queue.push(event);
    if (this.#queue.length >= this.#o.batchSize) void this.flush().catch(() => {});
    else if (!this.#timer && !this.#closed) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        void this.flush().catch(() => {});
      }, this.#o.flushIntervalMs);
      this.#timer.unref();
    }
  }

  async write(event: AuditEvent): Promise<void> {
    await this.#write([event]);
  }

  /** Writes everything queued so far; rejects if a batch cannot be written (events stay queued). */
  async flush(): Promise<void> {
    while (this.#flushing) await this.#flushing;
    while (this.#queue.length > 0) {
      const batch = this.#queue.slice(0, this.#o.batchSize);
      this.#flushing = this.#write(batch).then(() => {
        this.#queue.splice(0, batch.length);
      });
      try {
        await this.#flushing;
      } catch (error) {
        this.#o.onError?.(error, 0);
        throw error;
      } finally {
        this.#flushing = undefined;
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.flush();
  }
}
