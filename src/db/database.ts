/** A row as the drivers return it. */
export type Row = Record<string, unknown>;

export interface QueryResult<R extends Row = Row> {
  rows: R[];
  rowCount: number;
}

/** Something that runs one parameterised statement: a pool, a connection or a transaction. */
export interface Queryable {
  query<R extends Row = Row>(text: string, params?: readonly unknown[]): Promise<QueryResult<R>>;
}

export interface TransactionOptions {
  /**
   * A parameter-free statement to run right after BEGIN, before `fn`. PostgreSQL sends it with
   * BEGIN in one round trip (the tenant binding of every tool call).
   */
  begin?: string;
  /**
   * A parameter-free script to run as the transaction's last statement, before COMMIT, and after
   * a ROLLBACK, which undoes most of the transaction's session state but not all (PostgreSQL keeps
   * session-level advisory locks past it): tenant transactions reset the session state their
   * statements may have left on the connection.
   */
  reset?: string;
}

/** A statement that binds a transaction to a tenant; it returns no rows. */
export interface Binding {
  /** A stable name for the statement (prepared once per connection). */
  readonly name: string;
  readonly text: string;
  readonly values: readonly string[];
  /** Parameter-free statements run after the statement, in its transaction (see `TransactionOptions.reset`). */
  readonly reset?: readonly string[];
  /**
   * Whether the statement may run as a prepared statement kept per connection (see
   * `PostgresOptions.statementCacheSize`): only where its plan is the same for every tenant, which
   * a per-tenant `search_path` breaks.
   */
  readonly cacheable?: boolean;
}

/** One transaction's connection: parameterised statements, and scripts without parameters (migrations). */
export interface TransactionHandle extends Queryable {
  exec(sql: string): Promise<void>;
}

/**
 * The small surface Tenantry needs from PostgreSQL, implemented for embedded PGlite and for a
 * `pg` pool. A transaction runs on one connection from BEGIN to COMMIT, which is what makes
 * `set_config(…, true)` and `SET LOCAL` safe (seed defects 1 and 2 ran them on a pool).
 */
export interface Database extends Queryable {
  readonly kind: "pglite" | "postgres";
  /** Runs a script of several statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
  /**
   * `query` for a statement sent again and again with the same text: PostgreSQL parses and plans
   * it once per connection, as the prepared statement `name`. Optional: without it, `query`.
   */
  queryPrepared?<R extends Row = Row>(
    name: string,
    text: string,
    params: readonly unknown[],
  ): Promise<QueryResult<R>>;
  /**
   * Runs `binding`, one statement, then `binding.reset`, in a single transaction of their own, sent
   * together (one round trip). Optional: without it, callers use {@link transaction}.
   */
  bound?<R extends Row = Row>(
    binding: Binding,
    text: string,
    params?: readonly unknown[],
  ): Promise<QueryResult<R>>;
  /** Runs `fn` inside BEGIN … COMMIT on one connection; ROLLBACK if it throws. */
  transaction<T>(fn: (tx: TransactionHandle) => Promise<T>, options?: TransactionOptions): Promise<T>;
  /**
   * LISTEN on a channel; returns a function that stops listening. `onPayload(undefined)` means
   * notifications may have been missed (the listener connected or reconnected): no NOTIFY can
   * send that, so SQL run on any connection cannot fake it.
   */
  listen(channel: string, onPayload: (payload: string | undefined) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/**
 * The two ways the server reaches the database: as the owner (migrations, provisioning, the
 * registry) and as the runtime role (tool queries, always inside a tenant transaction).
 * On PGlite both are one instance; the runtime side switches role with `SET LOCAL ROLE`.
 */
export interface Databases {
  readonly admin: Database;
  readonly runtime: Database;
  /** A role each runtime transaction must `SET LOCAL ROLE` to (PGlite), or undefined. */
  readonly runtimeRole: string | undefined;
  /** The role name runtime connections use, for grants and checks. */
  readonly runtimeRoleName: string;
  close(): Promise<void>;
}
