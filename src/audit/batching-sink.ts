import { TenantryError } from "../errors.js";
import type { AuditEvent, AuditSink } from "./audit-event.js";

/** Where a batch of events is written. Must be all-or-nothing. */
export type WriteBatch = (events: readonly AuditEvent[]) => Promise<void>;

export interface BatchingOptions {
  /** Most events queued or reserved at once; past it requests are refused with 503. */
  queueSize: number;
  /** Most events in one write. */
  batchSize: number;
  /**
   * A write starts as soon as this many events wait (else after `flushIntervalMs`). Default
   * {@link START_AT}, or `batchSize` if smaller.
   */
  startAt?: number;
  flushIntervalMs: number;
  /** Called when a background batch fails (it is retried with backoff). */
  onError?: (error: unknown, pending: number) => void;
  /** Longest pause between retries of a failed batch. Default 5 s. */
  maxRetryDelayMs?: number;
  /**
   * Most events of requests refused before any work queued at once (`enqueueRefused`), summary
   * included. Default a tenth of `queueSize` (at least 1): enough to record every refusal of
   * ordinary traffic (a client with a stale token, a tenant over its rate now and then) one by
   * one, small enough that requests that do work keep nine tenths of the queue whatever is refused.
   */
  refusedShare?: number;
  /** The replica named in the summary of unrecorded refusals. */
  replica?: string;
}

/** The `action` of the event that counts refusals before any work not recorded one by one. */
export const UNRECORDED_ACTION = "audit.unrecorded";

/** Refusals before any work not recorded one by one, since the last summary event. */
interface Unrecorded {
  count: number;
  since: string;
  until: string;
  codes: Record<string, number>;
  /** Per tenant named (refusals of no tenant are not counted here); at most {@link SUMMARY_TENANTS} ids. */
  tenants: Record<string, number>;
  tenantIds: number;
}

/**
 * Most tenant ids one summary names; the refusals of tenants past them count under `(other)`.
 * Ids of unknown tenants come from tokens anyone with an IdP account can mint: a summary must
 * stay small whatever they say.
 */
const SUMMARY_TENANTS = 100;
const OTHER_TENANTS = "(other)";

const CLOSE_ATTEMPTS = 3;

/**
 * Events waiting that start a write: fewer than `batchSize`, so that while the writer keeps up it
 * writes often and small (on a machine whose cores the database shares, a 500-row INSERT is a few
 * milliseconds of its CPU at once, which requests queue behind), and batches grow towards
 * `batchSize` only when events arrive faster than it writes them.
 */
const START_AT = 200;

/**
 * Request events go through a bounded queue and are written in batches off the hot path, by one
 * writer at a time, in order. Room is reserved once a request is authenticated, before any work
 * (`reserve`), so a request that was admitted can always record its event; when there is no room
 * the server answers 503 before doing any work, rather than dropping events. A failed batch stays
 * at the head of the queue and is retried with backoff; `close` flushes what is left.
 *
 * Requests refused before any work (a junk token, an unknown or suspended tenant, a tenant over its
 * rate or its requests in flight) hold no room: their events take free room only within a bounded
 * share of the queue, so a flood of them while the writer is slow cannot fill the queue and turn
 * other tenants' requests into 503s. Past the share they are counted, and one summary event
 * (`audit.unrecorded`) says how many were not recorded one by one, per error code and per tenant,
 * as soon as the share has room again.
 */
export class BatchingAuditSink implements AuditSink {
  readonly #write: WriteBatch;
  readonly #o: BatchingOptions;
  readonly #queue: AuditEvent[] = [];
  #reserved = 0;
  /** Events removed from the head of the queue so far: `#written + i` numbers the event at `#queue[i]`. */
  #written = 0;
  /** Numbers of the queued events of refusals before any work (and summaries), oldest first. */
  readonly #refused: number[] = [];
  readonly #share: number;
  #unrecorded: Unrecorded | undefined;
  #timer: NodeJS.Timeout | undefined;
  #draining: Promise<void> | undefined;
  #failures = 0;
  #closed = false;
  readonly #startAt: number;

  constructor(write: WriteBatch, options: BatchingOptions) {
    if (!(options.queueSize >= 1 && options.batchSize >= 1)) {
      throw new TenantryError("invalid_argument", "audit queue_size and batch_size must be at least 1");
    }
    this.#write = write;
    this.#o = options;
    this.#share = Math.max(1, options.refusedShare ?? Math.floor(options.queueSize / 10));
    this.#startAt = Math.max(1, Math.min(options.batchSize, options.startAt ?? START_AT));
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
    this.#push(event);
  }

  enqueueRefused(event: AuditEvent): boolean {
    if (this.full || this.#refused.length >= this.#share) {
      let u = this.#unrecorded;
      if (u === undefined) {
        // No prototype: a tenant id may be spelt `__proto__`.
        u = {
          count: 0,
          since: event.at,
          until: event.at,
          codes: Object.create(null) as Record<string, number>,
          tenants: Object.create(null) as Record<string, number>,
          tenantIds: 0,
        };
        this.#unrecorded = u;
      }
      u.count++;
      u.until = event.at;
      const code = event.errorCode ?? "none";
      u.codes[code] = (u.codes[code] ?? 0) + 1;
      if (event.tenantId !== null) {
        let id = event.tenantId;
        if (!Object.hasOwn(u.tenants, id)) {
          if (u.tenantIds < SUMMARY_TENANTS) u.tenantIds++;
          else id = OTHER_TENANTS;
        }
        u.tenants[id] = (u.tenants[id] ?? 0) + 1;
      }
      return false;
    }
    this.#refused.push(this.#written + this.#queue.length);
    this.#push(event);
    return true;
  }

  /** Refusals before any work counted but not yet summarised in the queue. */
  get unrecorded(): number {
    return this.#unrecorded?.count ?? 0;
  }

  #push(event: AuditEvent): void {
    this.#queue.push(event);
    if (this.#closed) return; // close() is draining: it will write this too
    if (this.#queue.length >= this.#startAt && this.#failures === 0) this.#background(0);
    else this.#background(this.#o.flushIntervalMs);
  }

  /**
   * Queues the summary of the refusals not recorded one by one, once the refused share
   * (which it counts against) and the queue have room; `force` (close) queues it regardless.
   */
  #summarize(force = false): void {
    const u = this.#unrecorded;
    if (u === undefined) return;
    if (!force && (this.full || this.#refused.length >= this.#share)) return;
    this.#unrecorded = undefined;
    this.#refused.push(this.#written + this.#queue.length);
    this.#queue.push({
      at: u.since,
      kind: "request",
      tenantId: null,
      userId: null,
      impersonatedBy: null,
      action: UNRECORDED_ACTION,
      tool: null,
      outcome: "denied",
      errorCode: null,
      latencyMs: null,
      requestId: null,
      replica: this.#o.replica ?? "unknown",
      details: {
        unrecorded: u.count,
        since: u.since,
        until: u.until,
        error_codes: u.codes,
        tenants: u.tenants,
      },
    });
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
    this.#summarize(true);
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
   * first batch and then goes on while at least `startAt` events wait, each batch taking up to
   * `batchSize` of them: what arrives meanwhile in smaller numbers waits for the flush interval, so
   * a busy server writes batches of `startAt` events or more (each statement and commit has a
   * fixed cost), and batches grow to `batchSize` when events arrive faster than one write takes.
   * `all` (flush, close) writes until the queue is empty.
   */
  #drain(all = false): Promise<void> {
    if (this.#draining) return this.#draining;
    if (this.#queue.length === 0) return Promise.resolve();
    const run = async () => {
      for (let first = true; this.#queue.length > 0; first = false) {
        if (!first && !all && this.#queue.length < this.#startAt) break;
        const batch = this.#queue.slice(0, this.#o.batchSize);
        await this.#write(batch);
        this.#queue.splice(0, batch.length);
        this.#written += batch.length;
        const u = this.#refused;
        let gone = 0;
        while (gone < u.length && (u[gone] as number) < this.#written) gone++;
        if (gone > 0) u.splice(0, gone);
        this.#failures = 0;
        this.#summarize();
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
    // A drain in flight goes on by itself while at least `startAt` events wait, and schedules the
    // flush interval for fewer: a timer here would only fire late (a busy event loop), once that
    // drain had ended, and write a batch of whatever arrived since, however small.
    if (delayMs === 0 && this.#draining) return;
    if (delayMs === 0 && this.#timer) {
      // A full batch need not wait for the flush interval.
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#timer) return;
    if (delayMs === 0) {
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
