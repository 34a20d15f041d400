import pg from "pg";
import { isTenantryError, TenantryError } from "../errors.js";
import {
  BoundStatement,
  isStalePlan,
  leavesUnresettableState,
  mayHaveLeftUnresettableState,
  mustRetire,
} from "./bound-statement.js";
import type {
  Binding,
  Database,
  QueryResult,
  Row,
  TransactionHandle,
  TransactionOptions,
} from "./database.js";
import { clientDeadlineMs, StallWatch } from "./stall-watch.js";

/** How long a call waits for a pooled connection (or for its tenant's share of them) before failing. */
export const CONNECTION_WAIT_MS = 5000;

/**
 * TCP keepalive probes start after a connection is idle this long, so a peer that vanished (a host
 * gone in a failover) is noticed on idle connections too, the LISTEN one included.
 */
const KEEPALIVE_IDLE_MS = 10_000;

/**
 * How often the LISTEN connection sends `SELECT 1`. An idle listener waits on nothing, so neither
 * the stall watch nor keepalive notices a PostgreSQL that went silent with the connection up (a
 * hung primary; keepalive only notices a vanished peer, after minutes of probes): it stays deaf,
 * and every replica's cached registry entries go stale up to their TTL after each write. The
 * heartbeat is what the stall watch bounds: a silent listener is closed within this plus the
 * client-side deadline, reconnects, and the registry drops its cache. Fixed, not derived from the
 * registry TTL: while the listener is deaf the TTL (1 s by default, 60 s at most) still bounds how
 * stale an entry gets, so the heartbeat only shortens how long that lasts; 10 s keeps it well
 * under the longest TTL for one trivial statement per replica every 10 s.
 */
export const LISTEN_HEARTBEAT_MS = 10_000;

export interface PostgresOptions {
  poolSize: number;
  /**
   * PostgreSQL cancels a statement that runs longer. It also sets the client-side deadline (see
   * {@link clientDeadlineMs}): a connection that waits this long plus a margin without a byte from
   * PostgreSQL is destroyed, and its statements fail with `backend_unavailable`.
   */
  statementTimeoutMs: number;
  /**
   * PostgreSQL ends a session left idle inside a transaction this long (a tool awaiting something
   * else while it holds its transaction open), which frees its connection. Absent: no limit.
   */
  idleInTransactionTimeoutMs?: number;
  applicationName?: string;
  /**
   * Tool statements each connection keeps prepared, under bindings that allow it (see
   * `StatementCache` in bound-statement.ts). Default 0: every statement parsed and planned anew.
   */
  statementCacheSize?: number;
  /** How often the LISTEN connection checks that PostgreSQL answers (tests). Default {@link LISTEN_HEARTBEAT_MS}. */
  listenHeartbeatMs?: number;
}

/**
 * A `pg` pool. Each transaction holds one client from BEGIN to COMMIT/ROLLBACK.
 *
 * Clients run in pipeline mode: a statement is written as soon as it is issued, without waiting for
 * the one before to finish. A transaction uses that once: BEGIN with its prelude (the tenant
 * binding) goes out together with the first statement, so a tool call's first query costs one
 * round trip, not two. The first statement's result is only handed back once BEGIN and the prelude
 * are known to have succeeded; had they failed, PostgreSQL refuses what follows in the aborted
 * transaction, and even a statement that ran would have run unbound, where the policies show and
 * accept nothing.
 *
 * Every statement has a client-side deadline ({@link StallWatch}): when PostgreSQL stops answering
 * while the connection stays up, the connection is destroyed and its statements fail with
 * `backend_unavailable`, instead of waiting (with their connection) until TCP gives up.
 */
export class PostgresDatabase implements Database {
  readonly kind = "postgres" as const;
  readonly #pool: pg.Pool;
  readonly #url: string;
  /** The stop function of every listener in service. */
  readonly #listeners = new Set<() => Promise<void>>();
  readonly #watch: StallWatch;
  readonly #heartbeatMs: number;
  readonly #statementCacheSize: number;

  constructor(url: string, options: PostgresOptions) {
    this.#url = url;
    this.#watch = new StallWatch(clientDeadlineMs(options.statementTimeoutMs));
    this.#heartbeatMs = options.listenHeartbeatMs ?? LISTEN_HEARTBEAT_MS;
    this.#statementCacheSize = options.statementCacheSize ?? 0;
    this.#pool = new pg.Pool({
      connectionString: url,
      max: options.poolSize,
      statement_timeout: options.statementTimeoutMs,
      ...(options.idleInTransactionTimeoutMs
        ? { idle_in_transaction_session_timeout: options.idleInTransactionTimeoutMs }
        : {}),
      application_name: options.applicationName ?? "tenantry",
      connectionTimeoutMillis: CONNECTION_WAIT_MS,
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEPALIVE_IDLE_MS,
      pipeline: true,
    } as pg.PoolConfig);
    // An idle client that dies (server restart) must not crash the process.
    this.#pool.on("error", () => {});
    // 'connect' once a new client is ready, 'remove' once the pool has let it go (ended or destroyed).
    this.#pool.on("connect", (client) => this.#watch.add(client));
    this.#pool.on("remove", (client) => this.#watch.delete(client));
    // A connection whose statement could have replaced a prepared statement of ours is closed
    // rather than idled (see leavesUnresettableState). 'release' comes before pg-pool decides, and
    // a client that is not queryable is removed (pg-pool's _release; its own TODO names the field).
    this.#pool.on("release", (_error: unknown, client: pg.PoolClient) => {
      if (mustRetire(client.connection)) (client as unknown as { _queryable: boolean })._queryable = false;
    });
  }

  async query<R extends Row = Row>(text: string, params: readonly unknown[] = []): Promise<QueryResult<R>> {
    // A Query of our own, as pg would make from (text, params): one object either way, and
    // #submit can tell whether a connection ever took it.
    const result = await this.#submit<R>(new pg.Query<R>(text, params as unknown[]));
    return { rows: result.rows, rowCount: result.rowCount ?? result.rows.length };
  }

  async queryPrepared<R extends Row = Row>(
    name: string,
    text: string,
    params: readonly unknown[],
  ): Promise<QueryResult<R>> {
    const result = await this.#submit<R>(new pg.Query<R>({ name, text, values: params as unknown[] }));
    return { rows: result.rows, rowCount: result.rowCount ?? result.rows.length };
  }

  async exec(sql: string): Promise<void> {
    await this.#submit(new pg.Query(sql));
  }

  /** `binding` and the statement in one write, one implicit transaction, one round trip. */
  async bound<R extends Row = Row>(
    binding: Binding,
    text: string,
    params: readonly unknown[] = [],
  ): Promise<QueryResult<R>> {
    // The statement's result alone (BoundStatement drops the binding's and the resets').
    const statement = new BoundStatement(binding, text, params, this.#statementCacheSize);
    let result: pg.QueryResult<R>;
    try {
      result = await this.#submit<R>(statement);
    } catch (error) {
      if (!(statement.cached && isStalePlan(error))) throw error;
      // Its exchange ran nothing (and cost its connection, with that connection's cache).
      result = await this.#submit<R>(new BoundStatement(binding, text, params));
    }
    return { rows: result.rows, rowCount: result.rowCount ?? result.rows.length };
  }

  /** Runs one statement on a pooled connection, its failure mapped by {@link undispatched}. */
  async #submit<R extends Row>(statement: pg.Query | BoundStatement): Promise<pg.QueryResult<R>> {
    try {
      return (await this.#pool.query(statement as unknown as pg.QueryConfig)) as unknown as pg.QueryResult<R>;
    } catch (error) {
      throw undispatched(statement, error);
    }
  }

  async transaction<T>(
    fn: (tx: TransactionHandle) => Promise<T>,
    options: TransactionOptions = {},
  ): Promise<T> {
    const client = await this.#pool.connect().catch((error: unknown) => {
      throw noConnection(error);
    });
    let broken = false;
    // pg-pool listens for errors of idle clients only. A checked-out connection that dies (a
    // failover, a terminated backend) emits 'error', and an 'error' nobody listens to ends the
    // process: listen while the transaction holds it, and destroy it rather than return it.
    const onError = () => {
      broken = true;
    };
    client.on("error", onError);
    // Not awaited: it travels with the first statement (see the class comment), in the same
    // write: the socket is corked until that statement is issued, or until this turn of the event
    // loop ends if the transaction does something else first.
    const flush = holdWrites(client);
    const began = client.query(options.begin ? `BEGIN; ${options.begin}` : "BEGIN");
    began.catch(() => {}); // observed by every statement, and before COMMIT
    const run = async <R extends Row>(text: string, params: readonly unknown[] | undefined) => {
      const statement = client.query<R>(text, params as unknown[] | undefined);
      flush();
      statement.catch(() => {});
      // No result leaves a transaction whose BEGIN or binding failed (resolved at once after the first).
      await began;
      // A connection whose SQL may have replaced one of our prepared statements is destroyed at
      // release, not returned: whether the statement completed or failed.
      let result: pg.QueryResult<R> | pg.QueryResult<R>[];
      try {
        result = await statement;
      } catch (error) {
        if (mayHaveLeftUnresettableState(text)) broken = true;
        throw error;
      }
      // A script's results come as a list, one per statement.
      const results = (Array.isArray(result) ? result : [result]) as pg.QueryResult[];
      if (results.some((r) => leavesUnresettableState(r.command, text))) broken = true;
      return result;
    };
    const tx: TransactionHandle = {
      async query<R extends Row>(text: string, params: readonly unknown[] = []): Promise<QueryResult<R>> {
        const result = await run<R>(text, params);
        return { rows: result.rows, rowCount: result.rowCount ?? result.rows.length };
      },
      async exec(sql: string): Promise<void> {
        await run(sql, undefined);
      },
    };
    try {
      const value = await fn(tx);
      flush();
      await began; // a transaction that ran no statement still reports a failed BEGIN
      // The reset leaves in the same query as COMMIT (one message, one result set to read). In a
      // transaction where a statement failed, the reset fails with 25P02 and COMMIT is skipped;
      // the ROLLBACK below ends the transaction.
      const ended = (await client.query(options.reset ? `${options.reset}; COMMIT` : "COMMIT")) as
        | pg.QueryResult
        | pg.QueryResult[];
      const end = Array.isArray(ended) ? ended[ended.length - 1]! : ended;
      // COMMIT of a transaction in which a statement failed rolls back and reports no error; PGlite
      // throws 25P02 there, and so do we: the caller must not believe its writes were kept.
      if (end.command === "ROLLBACK") {
        throw Object.assign(new Error("Transaction was rolled back instead of committed"), { code: "25P02" });
      }
      return value;
    } catch (error) {
      try {
        // ROLLBACK undoes the transaction's session state but for what PostgreSQL keeps past it
        // (session-level advisory locks above all): the reset runs after it too.
        await client.query(options.reset ? `ROLLBACK; ${options.reset}` : "ROLLBACK");
      } catch {
        broken = true; // the connection is unusable: destroy it rather than return it to the pool
      }
      throw error;
    } finally {
      client.removeListener("error", onError);
      client.release(broken);
    }
  }

  /**
   * LISTEN on a dedicated connection that reconnects after errors, and after its heartbeat (see
   * {@link LISTEN_HEARTBEAT_MS}) went unanswered. `onPayload(undefined)` follows every connect: a
   * listener that reconnects may have missed notifications.
   */
  async listen(
    channel: string,
    onPayload: (payload: string | undefined) => void,
  ): Promise<() => Promise<void>> {
    let stopped = false;
    let served = false; // the first attempt succeeded: from then on failures retry, unseen by the caller
    let client: pg.Client | undefined; // the connection in service
    let retry: NodeJS.Timeout | undefined;
    let heartbeat: NodeJS.Timeout | undefined;
    const close = (c: pg.Client) => {
      this.#watch.delete(c);
      c.end().catch(() => {});
    };
    const retryLater = () => {
      if (!stopped) retry = setTimeout(() => void connect().catch(() => {}), 1000);
    };
    // The connection in service failed ('error', or its heartbeat did): once per connection.
    const lost = (c: pg.Client) => {
      if (client !== c) return;
      client = undefined;
      clearInterval(heartbeat);
      close(c);
      retryLater();
    };
    const connect = async (): Promise<void> => {
      const c = new pg.Client({
        connectionString: this.#url,
        application_name: "tenantry-listen",
        connectionTimeoutMillis: CONNECTION_WAIT_MS,
        keepAlive: true,
        keepAliveInitialDelayMillis: KEEPALIVE_IDLE_MS,
      });
      c.on("notification", (msg) => {
        if (msg.channel === channel) onPayload(msg.payload ?? "");
      });
      // An attempt's own errors are its catch's; an unheard 'error' would end the process.
      c.on("error", () => lost(c));
      try {
        await c.connect();
        this.#watch.add(c); // bounds the LISTEN below and every heartbeat
        await c.query(`LISTEN "${channel.replaceAll('"', '""')}"`);
      } catch (error) {
        close(c);
        // The first attempt fails the caller, who has nothing to stop a retry with: retry only reconnects.
        if (!served) {
          throw isTenantryError(error)
            ? error
            : new TenantryError("backend_unavailable", `cannot LISTEN on ${channel}`, { cause: error });
        }
        retryLater();
        return;
      }
      if (stopped) {
        close(c); // stopped while this reconnect was under way
        return;
      }
      served = true;
      client = c;
      let beating = false; // one heartbeat at a time: the watch ends one that goes unanswered
      heartbeat = setInterval(() => {
        if (beating) return;
        beating = true;
        c.query("SELECT 1").then(
          () => {
            beating = false;
          },
          () => lost(c),
        );
      }, this.#heartbeatMs);
      heartbeat.unref();
      onPayload(undefined);
    };
    await connect();
    const stop = async () => {
      stopped = true;
      this.#listeners.delete(stop);
      clearTimeout(retry);
      clearInterval(heartbeat);
      const c = client;
      client = undefined;
      if (c) {
        this.#watch.delete(c);
        await c.end().catch(() => {});
      }
    };
    this.#listeners.add(stop);
    return stop;
  }

  async close(): Promise<void> {
    for (const stop of [...this.#listeners]) await stop();
    this.#watch.close();
    await this.#pool.end();
  }
}

/** No connection within CONNECTION_WAIT_MS (the pool busy, or PostgreSQL silent), or PostgreSQL unreachable. */
function noConnection(cause: unknown): TenantryError {
  return new TenantryError("service_unavailable", "no database connection is available", { cause });
}

/**
 * The error of a statement sent through `pool.query`, which connects and runs in one call and
 * rejects with pg-pool's raw error either way: mapped as {@link PostgresDatabase.transaction} maps
 * its `pool.connect()` when no connection ever took the statement, left as it is otherwise (the
 * statement's own error, or the stall watch's `backend_unavailable`). pg sets a statement's
 * `callback` when a client takes it (pg/lib/client.js `query`), so telling costs nothing on the
 * path that succeeds.
 */
function undispatched(statement: pg.Query | BoundStatement, error: unknown): unknown {
  const taken = (statement as unknown as { callback?: unknown }).callback !== undefined;
  return taken || isTenantryError(error) ? error : noConnection(error);
}

/**
 * Corks a client's socket so that the next messages leave in one write; returns the function that
 * uncorks it (idempotent), which also runs by itself at the end of this turn of the event loop.
 * A socket without cork (another stream implementation) is left alone.
 */
function holdWrites(client: pg.PoolClient): () => void {
  const stream = (client as unknown as { connection?: { stream?: { cork?(): void; uncork?(): void } } })
    .connection?.stream;
  if (typeof stream?.cork !== "function" || typeof stream.uncork !== "function") return () => {};
  stream.cork();
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    stream.uncork!();
  };
  setImmediate(release);
  return release;
}
