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
  execute(message: { portal: string; rows: number }): void;
}

// Constructed from (text, values): a config object would be copied property descriptor by
// property descriptor (pg's cloneQueryConfig), which measured ~2 µs per statement.
const QueryBase = pg.Query as unknown as new (
  text: string,
  values: readonly unknown[],
) => { prepare(connection: WireConnection): void; queryMode: string | undefined };

/**
 * One statement preceded by a tenant binding, in one extended-protocol exchange: Bind/Execute of
 * the binding (a prepared statement, parsed once per connection), then Parse/Bind/Describe/Execute
 * of the statement, then a single Sync. PostgreSQL runs everything before a Sync in one implicit
 * transaction, so the binding (`set_config(…, true)`) holds for the statement and ends with it; if
 * the binding fails, the statement is skipped. The result is pg's multi-result array: the binding's
 * (no rows) first, the statement's second.
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
    if (
      connection.parsedStatements[b.name] === undefined &&
      connection.submittedNamedStatements[b.name] === undefined
    ) {
      connection.parse({ text: b.text, name: b.name });
      connection.submittedNamedStatements[b.name] = b.text;
    }
    connection.bind({ portal: "", statement: b.name, values: b.values, valueMapper: prepareValue });
    connection.execute({ portal: "", rows: 0 });
    super.prepare(connection);
  }
}
