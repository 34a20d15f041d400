import { createRequire } from "node:module";
import pg from "pg";
import { TenantryError } from "../errors.js";
import type { Binding } from "./database.js";

const require = createRequire(import.meta.url);
/** pg's own mapping of JavaScript values to wire values, as `Query` uses it for parameters. */
const { prepareValue } = require("pg/lib/utils") as { prepareValue: (value: unknown) => unknown };
/** pg's own message encoder: the pg-protocol that pg itself resolves, whose encoding its connection writes. */
const { serialize } = createRequire(require.resolve("pg"))("pg-protocol") as {
  serialize: {
    parse(message: { text: string; name: string }): Buffer;
    bind(message: {
      portal: string;
      statement: string;
      values: readonly unknown[];
      valueMapper: unknown;
    }): Buffer;
    describe(message: { type: "P"; name: string }): Buffer;
    close(message: { type: "S"; name: string }): Buffer;
    execute(message: { portal: string; rows: number }): Buffer;
    sync(): Buffer;
  };
};

/** The parts of pg's connection a query writes to (pg/lib/connection.js). */
interface WireConnection {
  stream: { writable: boolean; write(bytes: Buffer): unknown };
  parsedStatements: Record<string, string>;
  submittedNamedStatements: Record<string, string>;
  parse(message: { text: string; name: string }): void;
  bind(message: {
    portal: string;
    statement: string;
    values: readonly unknown[];
    valueMapper: unknown;
  }): void;
  execute(message: { portal: string; rows: number | undefined }): void;
  sync(): void;
  prependListener(event: "readyForQuery", listener: (message: { status: string }) => void): unknown;
}

/**
 * The transaction status of each connection's latest ReadyForQuery (`I`: no transaction open), kept
 * by one listener per connection that runs ahead of pg's client, which hands the message on to the
 * statement without its status. One listener for the connection's life, rather than one added and
 * removed per statement (~3 µs of event-emitter work per statement, measured in the bench server).
 */
const readyStatus = new WeakMap<WireConnection, string>();

function watchReadyStatus(connection: WireConnection): void {
  if (readyStatus.has(connection)) return;
  readyStatus.set(connection, "I");
  connection.prependListener("readyForQuery", (message) => {
    readyStatus.set(connection, message.status);
  });
}

/**
 * Commands that can leave prepared statements on the connection: `PREPARE`, `DEALLOCATE`, and `DO`
 * (whose body may run either). SQL shares the namespace of the statements Tenantry prepares once
 * per connection, its tenant binding among them, so tool SQL could replace the binding with one
 * that binds a tenant of its choosing, for every later exchange on the connection, whichever
 * tenant's. The session reset cannot undo it (`DEALLOCATE ALL` would drop Tenantry's own
 * statements too), so a connection that ran one is closed after its call instead of reused.
 * Matched against a command tag, or its first word (all that pg keeps of it in a result).
 */
const UNRESETTABLE = /^(?:DO|PREPARE|DEALLOCATE)\b/;

/**
 * A `CREATE` whose text names a function or procedure: the runtime role can create them in
 * `pg_temp`, and their PL/pgSQL may run `PREPARE` / `DEALLOCATE` later in the call, under a
 * `SELECT` tag. Matched against the statement's text; a false match only costs a connection.
 */
const CREATES_CODE = /\b(?:FUNCTION|PROCEDURE)\b/i;

/**
 * The text of a statement that may have run an {@link UNRESETTABLE} command before it failed:
 * neither `PREPARE` nor `DEALLOCATE` is undone by the rollback, and a failed statement reports no
 * tag. A false match (`ON CONFLICT DO NOTHING` in a statement that failed) only costs a connection.
 */
const MAY_RUN_UNRESETTABLE = /\b(?:DO|PREPARE|DEALLOCATE)\b/i;

/** Connections that ran an {@link UNRESETTABLE} command: the pool must close them, not reuse them. */
const retired = new WeakSet<object>();

/**
 * Whether a statement that completed with `command` (a tag: `DO`, `PREPARE`, `SELECT 5`,
 * `CREATE FUNCTION`, … or its first word) may have left state the session reset cannot undo.
 * `text` is the statement's (or script's) SQL.
 */
export function leavesUnresettableState(command: string | null | undefined, text: string): boolean {
  if (command == null) return false;
  return UNRESETTABLE.test(command) || (command.startsWith("CREATE") && CREATES_CODE.test(text));
}

/** Whether a statement (or script) that failed may have left state the session reset cannot undo. */
export function mayHaveLeftUnresettableState(text: string): boolean {
  return MAY_RUN_UNRESETTABLE.test(text);
}

/** Whether `connection` (a pg client's `connection`) ran a statement after which it must be closed. */
export function mustRetire(connection: object): boolean {
  return retired.has(connection);
}

// Constructed from (text, values): a config object would be copied property descriptor by
// property descriptor (pg's cloneQueryConfig), which measured ~2 µs per statement.
const QueryBase = pg.Query as unknown as new (
  text: string,
  values: readonly unknown[],
) => {
  prepare(connection: WireConnection): void;
  /** Executes the statement's portal, then Sync (pg/lib/query.js). */
  _getRows(connection: WireConnection, rows: number | undefined): void;
  queryMode: string | undefined;
  portal: string;
  readonly text: string;
  readonly values: readonly unknown[];
  handleRowDescription(message: unknown): void;
  handleDataRow(message: unknown): void;
  handleCommandComplete(message: unknown, connection: WireConnection): void;
  handleEmptyQuery(connection: WireConnection): void;
  handleError(error: Error, connection: WireConnection): void;
  handleReadyForQuery(connection: WireConnection): void;
};

/**
 * One statement preceded by a tenant binding, in one extended-protocol exchange: Bind/Execute of
 * the binding (a prepared statement, parsed once per connection), then Parse/Bind/Describe/Execute
 * of the statement, then Bind/Execute of the binding's resets (each parsed once per connection),
 * then a single Sync. PostgreSQL runs everything before a Sync in one implicit transaction, so the
 * binding (`set_config(…, true)`) holds for the statement and ends with it; if the binding fails,
 * the statement is skipped, and if the statement fails, the resets are (its transaction is rolled
 * back, and its session state with it). The result is the statement's alone: the messages of the
 * binding and the resets (their completions, and any rows a reset returns) are counted and
 * dropped, so no result is built for them.
 */
export class BoundStatement extends QueryBase {
  readonly #binding: Binding;
  /**
   * Whose messages arrive now: 0 the binding's, 1 the statement's, 2 and on the resets'. Each of
   * them ends with CommandComplete, or EmptyQueryResponse for an empty statement; none but the
   * statement is described, so only its rows come with a RowDescription.
   */
  #phase = 0;

  readonly #cacheSize: number;
  /** Whether this exchange bound a statement kept prepared on its connection. */
  cached = false;

  /**
   * `cacheSize`: how many statements each connection keeps prepared ({@link StatementCache}); 0,
   * or a binding that is not `cacheable`, sends this one unnamed, parsed and planned anew.
   */
  constructor(binding: Binding, text: string, values: readonly unknown[], cacheSize = 0) {
    super(text, values);
    this.queryMode = "extended";
    this.#binding = binding;
    this.#cacheSize = binding.cacheable ? cacheSize : 0;
  }

  override prepare(connection: WireConnection): void {
    watchReadyStatus(connection);
    const bytes = this.#encoded(connection);
    if (bytes !== undefined) {
      if (connection.stream.writable) connection.stream.write(bytes);
      return;
    }
    // First use on this connection (the binding and resets get parsed), or parameters that do
    // not encode (pg's own prepare reports that): message by message, as pg writes a query.
    const b = this.#binding;
    run(connection, b.name, b.text, b.values);
    super.prepare(connection);
  }

  /**
   * The whole exchange as one buffer, once the connection has parsed the binding and the resets:
   * their Bind/Execute messages are the same for every statement of a binding and are encoded
   * once; only the statement's own messages are encoded per call. `undefined` when this fast path
   * does not apply.
   */
  #encoded(connection: WireConnection): Buffer | undefined {
    const wire = encodedBinding(this.#binding);
    if (!wire.names.every((name) => parsed(connection, name))) return undefined;
    const cache = this.#cacheSize > 0 ? cacheOf(connection, this.#cacheSize) : undefined;
    const hit = cache?.get(this.text);
    const name = hit ?? cache?.nextName() ?? "";
    let bind: Buffer;
    try {
      bind = serialize.bind({ portal: "", statement: name, values: this.values, valueMapper: prepareValue });
    } catch {
      return undefined; // nothing recorded in the cache: pg's own prepare reports the failure
    }
    this.cached = cache !== undefined;
    let parse: readonly Buffer[];
    if (cache === undefined) parse = [serialize.parse({ text: this.text, name: "" })];
    else parse = hit === undefined ? cache.add(this.text, name) : [];
    return Buffer.concat([wire.head, ...parse, bind, DESCRIBE_PORTAL, EXECUTE_PORTAL, wire.tail]);
  }

  override handleRowDescription(message: unknown): void {
    if (this.#phase === 1) super.handleRowDescription(message);
  }

  override handleDataRow(message: unknown): void {
    if (this.#phase === 1) super.handleDataRow(message);
  }

  override handleCommandComplete(message: unknown, connection: WireConnection): void {
    if (this.#phase++ !== 1) return;
    if (leavesUnresettableState((message as { text?: string }).text, this.text)) retired.add(connection);
    super.handleCommandComplete(message, connection);
  }

  override handleEmptyQuery(connection: WireConnection): void {
    if (this.#phase++ === 1) super.handleEmptyQuery(connection);
  }

  /**
   * A statement that opened a transaction block (`BEGIN`, `START TRANSACTION`) leaves it open past
   * the Sync: the connection would go back to the pool inside it, and the next exchanges there,
   * any tenant's, would run in it uncommitted, to be discarded by the next `ROLLBACK` or failure
   * on it after they were reported as done. Fail the statement instead: `pool.query` then drops
   * the connection, and PostgreSQL rolls the block back.
   */
  override handleReadyForQuery(connection: WireConnection): void {
    const status = readyStatus.get(connection);
    if (status !== undefined && status !== "I") {
      this.handleError(
        new TenantryError(
          "invalid_argument",
          'a statement left a transaction open; under transaction: "statement" each statement is its own transaction',
        ),
        connection,
      );
      return;
    }
    super.handleReadyForQuery(connection);
  }

  /** After the statement's Execute and before its Sync: the resets. */
  override _getRows(connection: WireConnection, rows: number | undefined): void {
    connection.execute({ portal: this.portal, rows });
    const { names } = encodedBinding(this.#binding); // the binding's, then the resets'
    this.#binding.reset?.forEach((text, i) => {
      run(connection, names[i + 1]!, text, []);
    });
    connection.sync();
  }
}

/**
 * The tool statements one connection keeps prepared, by text, least recently used first. Parsing
 * and planning a statement under RLS measured ~50 µs of PostgreSQL CPU per call (the policies are
 * planned into every statement), about a third of a one-query tool call's database time; a
 * prepared statement is bound and run without either. Plans are the same for every tenant
 * ({@link Binding.cacheable}), and PostgreSQL re-plans by itself when a table they use changes.
 *
 * The names (`tenantry_s1`, …) share the connection's namespace with SQL's `PREPARE`, but a
 * connection whose SQL could have prepared or deallocated anything is closed after its call
 * ({@link UNRESETTABLE}). A statement whose Parse fails costs its connection too (`pool.query`
 * destroys a connection on any error), so no name is ever recorded here without its statement.
 */
class StatementCache {
  readonly #names = new Map<string, string>();
  readonly #capacity: number;
  #next = 0;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  /** The name `text` is prepared under here, now the most recently used; `undefined` if it is not. */
  get(text: string): string | undefined {
    const name = this.#names.get(text);
    if (name !== undefined) {
      this.#names.delete(text); // most recently used last
      this.#names.set(text, name);
    }
    return name;
  }

  /** A name no statement of this connection has had. */
  nextName(): string {
    return `tenantry_s${++this.#next}`;
  }

  /**
   * Records `text` as prepared under `name`, and returns the messages that make it so, to be sent
   * before its Bind: the Close of the least recently used statement when the cache is full, then
   * the Parse.
   */
  add(text: string, name: string): Buffer[] {
    const messages: Buffer[] = [];
    if (this.#names.size >= this.#capacity) {
      const [oldest, evicted] = this.#names.entries().next().value as [string, string];
      this.#names.delete(oldest);
      messages.push(serialize.close({ type: "S", name: evicted }));
    }
    this.#names.set(text, name);
    messages.push(serialize.parse({ text, name }));
    return messages;
  }
}

const statementCaches = new WeakMap<WireConnection, StatementCache>();

function cacheOf(connection: WireConnection, capacity: number): StatementCache {
  let cache = statementCaches.get(connection);
  if (cache === undefined) {
    cache = new StatementCache(capacity);
    statementCaches.set(connection, cache);
  }
  return cache;
}

/**
 * PostgreSQL's refusal to run a prepared statement whose result columns changed since it was
 * prepared (a migration altered a table its `SELECT *` reads). The exchange it failed in ran
 * nothing: statement mode runs it again unprepared, once.
 */
export function isStalePlan(error: unknown): boolean {
  // Told apart by the function that raised it: the message is translated under lc_messages.
  const e = error as { code?: unknown; routine?: unknown } | null;
  return e?.code === "0A000" && e.routine === "RevalidateCachedQuery";
}

const DESCRIBE_PORTAL = serialize.describe({ type: "P", name: "" });
const EXECUTE_PORTAL = serialize.execute({ portal: "", rows: 0 });

/** A binding's messages as bytes: Bind/Execute of the binding, and of the resets followed by Sync. */
interface EncodedBinding {
  /** The prepared statements these messages name: the binding's, then each reset's. */
  readonly names: readonly string[];
  readonly head: Buffer;
  readonly tail: Buffer;
}

const encodedBindings = new WeakMap<Binding, EncodedBinding>();

function encodedBinding(binding: Binding): EncodedBinding {
  let wire = encodedBindings.get(binding);
  if (wire === undefined) {
    const execute = (name: string, values: readonly unknown[]) => [
      serialize.bind({ portal: "", statement: name, values, valueMapper: prepareValue }),
      EXECUTE_PORTAL,
    ];
    const resets = (binding.reset ?? []).map((_, i) => `${binding.name}_reset${i}`);
    wire = {
      names: [binding.name, ...resets],
      head: Buffer.concat(execute(binding.name, binding.values)),
      tail: Buffer.concat([...resets.flatMap((name) => execute(name, [])), serialize.sync()]),
    };
    encodedBindings.set(binding, wire);
  }
  return wire;
}

/**
 * Whether this connection has parsed (or been sent the Parse of) a named statement. pg confirms
 * only a query's own name, so ours stay "submitted"; a failed exchange does not leave one
 * submitted but unparsed, since `pool.query` destroys the connection on any error.
 */
function parsed(connection: WireConnection, name: string): boolean {
  return (
    connection.parsedStatements[name] !== undefined || connection.submittedNamedStatements[name] !== undefined
  );
}

/** Bind/Execute of a named statement, parsed first if this connection has not parsed it yet. */
function run(connection: WireConnection, name: string, text: string, values: readonly unknown[]): void {
  if (!parsed(connection, name)) {
    connection.parse({ text, name });
    connection.submittedNamedStatements[name] = text;
  }
  connection.bind({ portal: "", statement: name, values, valueMapper: prepareValue });
  connection.execute({ portal: "", rows: 0 });
}
