import type pg from "pg";
import { TenantryError } from "../errors.js";

/**
 * The longest a connection may wait for PostgreSQL in silence before it is destroyed: the
 * statement timeout plus a margin (a tenth, at least 1 s), so that PostgreSQL's own timeout, which
 * cancels the statement and keeps the connection, normally fires first.
 */
export function clientDeadlineMs(statementTimeoutMs: number): number {
  return statementTimeoutMs + Math.max(1000, Math.ceil(statementTimeoutMs / 10));
}

/** The parts of a `pg` client the watch reads (pg/lib/client.js and pg/lib/connection.js). */
interface WatchedClient {
  /** false from the moment a query is sent until PostgreSQL's ReadyForQuery for the last one. */
  readyForQuery?: boolean;
  connection: {
    stream: { readonly bytesRead: number; readonly destroyed: boolean; destroy(error?: Error): void };
  };
}

/** What the last sweep saw of one client: bytes read so far, and since when it has waited on them (-1: not waiting). */
interface Silence {
  bytes: number;
  since: number;
}

/**
 * The client-side deadline of every statement: a connection that waits for an answer from
 * PostgreSQL and reads nothing for {@link deadlineMs} is destroyed with `backend_unavailable`,
 * which fails every statement pipelined on it. PostgreSQL's statement_timeout cannot help when
 * PostgreSQL itself stops answering (a stalled server, a network black hole, a failover that left
 * half-open connections); without this, a statement waits until TCP gives up, with its connection.
 *
 * Destroying is the only safe end: the statement cannot be taken back (pipelined statements are
 * already on the wire), so a connection kept after a timeout would hand its late answer to the next
 * statement. Destroyed, it leaves the pool (pg-pool removes a client that errors or is released
 * with an error) and the pool opens a new one.
 *
 * Why a sweep and not a timer per statement (pg's `query_timeout` arms and clears one per query,
 * and would also cut off a long script whose statements each answer in time): the hot path pays
 * nothing. One timer per pool looks at its connections a few times per deadline; a connection is
 * waiting while pg's `readyForQuery` is false, and progresses while its socket's `bytesRead` grows.
 * Silence is counted from the first sweep that saw it, so a connection is never destroyed before
 * {@link deadlineMs} of silence, and at most two sweep periods (each at most 1 s) after.
 */
export class StallWatch {
  readonly deadlineMs: number;
  readonly #period: number;
  readonly #clients = new Map<WatchedClient, Silence>();
  readonly #timer: NodeJS.Timeout;
  #last = performance.now();

  constructor(deadlineMs: number) {
    this.deadlineMs = deadlineMs;
    this.#period = Math.max(10, Math.min(1000, Math.ceil(deadlineMs / 4)));
    this.#timer = setInterval(() => this.sweep(performance.now()), this.#period);
    this.#timer.unref();
  }

  add(client: pg.Client): void {
    this.#clients.set(client as unknown as WatchedClient, { bytes: 0, since: -1 });
  }

  delete(client: pg.Client): void {
    this.#clients.delete(client as unknown as WatchedClient);
  }

  /** One look at every connection (the timer's; tests may call it). */
  sweep(now: number): void {
    // A sweep that comes late (the event loop was blocked) knows nothing of the time in between:
    // an answer may sit unread in the socket. Start every count again rather than misjudge.
    const late = now - this.#last > 2 * this.#period;
    this.#last = now;
    for (const [client, silence] of this.#clients) {
      const stream = client.connection.stream;
      if (client.readyForQuery !== false || stream.destroyed) {
        silence.since = -1;
        continue;
      }
      const bytes = stream.bytesRead;
      if (silence.since < 0 || late || bytes !== silence.bytes) {
        silence.bytes = bytes;
        silence.since = now;
      } else if (now - silence.since >= this.deadlineMs) {
        this.#clients.delete(client);
        // pg fails every statement of the client with this error, then emits it as 'error'.
        stream.destroy(
          new TenantryError(
            "backend_unavailable",
            `PostgreSQL did not answer within ${this.deadlineMs} ms; the connection was closed`,
          ),
        );
      }
    }
  }

  close(): void {
    clearInterval(this.#timer);
    this.#clients.clear();
  }
}
