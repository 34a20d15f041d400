import { TenantryError } from "../errors.js";
import type { AuditEvent, AuditSink } from "./audit-event.js";

/** Where a batch of events is written. Must be all-or-nothing. */
export type WriteBatch = (events: readonly AuditEvent[]) => Promise<void>;

export interface BatchingOptions {
  /** Most events queued or reserved at once; past it requests are refused with 503. */
  queueSize: number;
  batchSize: number;
  flushIntervalMs: number;
  /** Called when a background batch fails (it is retried with backoff). */
  onError?: (error: unknown, pending: number) => void;
  /** Longest pause between retries of a failed batch. Default 5 s. */
  maxRetryDelayMs?: number;
}

const CLOSE_ATTEMPTS = 3;

/**
 * Request events go through a bounded queue and are written in batches off the hot path, by one
 * writer at a time, in order. Room is reserved when a request starts (`reserve`), so a request
 * that was admitted can always record its event; when there is no room the server answers 503
 * before doing any work, rather than dropping events. A failed batch stays at the head of the
 * queue and is retried with backoff; `close` flushes what is left.
 */
export class BatchingAuditSink implements AuditSink {
  readonly #write: WriteBatch;
  readonly #o: BatchingOptions;
  readonly #queue: AuditEvent[] = [];
  #reserved = 0;
  #timer: NodeJS.Timeout | undefined;
  #draining: Promise<void> | undefined;
  #failures = 0;
  #closed = false;

  constructor(write: WriteBatch, options: BatchingOptions) {
    if (!(options.queueSize >= 1 && options.batchSize >= 1)) {
      throw new TenantryError("invalid_argument", "audit queue_size and batch_size must be at least 1");
    }
    this.#write = write;
    this.#o = options;
  }

  get pending(): number {
    return this.#queue.length;
  }

  get full(): boolean {
    return this.#queue.length + this.#reserved >= this.#o.queueSize;
  }

  reserve(): boolean {
    if (this.full) return false;
    this.#reserved++;
    return true;
  }

  unreserve(): void {
    if (this.#reserved > 0) this.#reserved--;
  }

  enqueue(event: AuditEvent, options: { reserved?: boolean } = {}): void {
    if (options.reserved && this.#reserved > 0) {
      this.#reserved--;
    } else if (this.full) {
      throw new TenantryError("service_unavailable", "the audit queue is full");
    }
    this.#queue.push(event);
    if (this.#closed) return; // close() is draining: it will write this too
    if (this.#queue.length >= this.#o.batchSize && this.#failures === 0) this.#background(0);
    else this.#background(this.#o.flushIntervalMs);
  }

  async write(event: AuditEvent): Promise<void> {
    await this.#write([event]);
  }

  async flush(): Promise<void> {
    while (this.#queue.length > 0) await this.#drain(true);
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.flush();
        return;
      } catch (error) {
        if (attempt >= CLOSE_ATTEMPTS) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
      }
    }
  }

  /**
   * Writes batches, one drain at a time to keep events in order. A background drain writes the
   * first batch and then only full ones: what arrives meanwhile waits for the flush interval or a
   * full batch, so a busy server writes few large batches rather than many small ones (each
   * statement and commit has a fixed cost). `all` (flush, close) writes until the queue is empty.
   */
  #drain(all = false): Promise<void> {
    if (this.#draining) return this.#draining;
    if (this.#queue.length === 0) return Promise.resolve();
    const run = async () => {
      for (let first = true; this.#queue.length > 0; first = false) {
        if (!first && !all && this.#queue.length < this.#o.batchSize) break;
        const batch = this.#queue.slice(0, this.#o.batchSize);
        await this.#write(batch);
        this.#queue.splice(0, batch.length);
        this.#failures = 0;
      }
    };
    // Cleared when the run settles (never synchronously: the run awaits at least one write).
    const draining = run().finally(() => {
      if (this.#draining === draining) this.#draining = undefined;
    });
    this.#draining = draining;
    return draining;
  }

  /** Schedules a background drain in `delayMs` unless one is already due sooner. */
  #background(delayMs: number): void {
    if (this.#closed) return;
    if (delayMs === 0 && !this.#draining && this.#timer) {
      // A full batch need not wait for the flush interval.
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#timer) return;
    if (delayMs === 0 && !this.#draining) {
      void this.#drain().then(
        () => this.#afterDrain(),
        (error: unknown) => this.#failed(error),
      );
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#drain().then(
        () => this.#afterDrain(),
        (error: unknown) => this.#failed(error),
      );
    }, delayMs);
    this.#timer.unref();
  }

  #afterDrain(): void {
    // Events queued while the last batch was in flight.
    if (this.#queue.length > 0) this.#background(this.#o.flushIntervalMs);
  }

  #failed(error: unknown): void {
    this.#failures++;
    this.#o.onError?.(error, this.#queue.length);
    const delay = Math.min(this.#o.maxRetryDelayMs ?? 5000, 100 * 2 ** Math.min(this.#failures, 10));
    this.#background(delay);
  }
}
