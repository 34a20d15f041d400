import { createRequire } from "node:module";
import pg from "pg";
import type { Binding } from "./database.js";

const require = createRequire(import.meta.url);
/** pg's own mapping of JavaScript values to wire values, as `Query` uses it for parameters. */
const { prepareValue } = require("pg/lib/utils") as { prepareValue: (value: unknown) => unknown };

/** The parts of pg's connection a query writes to (pg/lib/connection.js). */
interface WireConnection {
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
};

/**
 * One statement preceded by a tenant binding, in one extended-protocol exchange: Bind/Execute of
 * the binding (a prepared statement, parsed once per connection), then Parse/Bind/Describe/Execute
 * of the statement, then Bind/Execute of the binding's resets (each parsed once per connection),
 * then a single Sync. PostgreSQL runs everything before a Sync in one implicit transaction, so the
 * binding (`set_config(…, true)`) holds for the statement and ends with it; if the binding fails,
 * the statement is skipped, and if the statement fails, the resets are (its transaction is rolled
 * back, and its session state with it). The result is pg's multi-result array: the binding's (no
 * rows) first, the statement's second, then one per reset.
 */
export class BoundStatement extends QueryBase {
  readonly #binding: Binding;

  constructor(binding: Binding, text: string, values: readonly unknown[]) {
    super(text, values);
    this.queryMode = "extended";
    this.#binding = binding;
  }

  override prepare(connection: WireConnection): void {
    const b = this.#binding;
    run(connection, b.name, b.text, b.values);
    super.prepare(connection);
  }

  /** After the statement's Execute and before its Sync: the resets. */
  override _getRows(connection: WireConnection, rows: number | undefined): void {
    connection.execute({ portal: this.portal, rows });
    this.#binding.reset?.forEach((text, i) => {
      run(connection, `${this.#binding.name}_reset${i}`, text, []);
    });
    connection.sync();
  }
}

/** Bind/Execute of a named statement, parsed first if this connection has not parsed it yet. */
function run(connection: WireConnection, name: string, text: string, values: readonly unknown[]): void {
  if (
    connection.parsedStatements[name] === undefined &&
    connection.submittedNamedStatements[name] === undefined
  ) {
    connection.parse({ text, name });
    connection.submittedNamedStatements[name] = text;
  }
  connection.bind({ portal: "", statement: name, values, valueMapper: prepareValue });
  connection.execute({ portal: "", rows: 0 });
}
