import type { Binding, Database, Queryable, QueryResult, Row, TransactionOptions } from "../db/database.js";
import { TenantryError } from "../errors.js";
import type { Release } from "../limits/concurrency.js";
import type { TenantDb } from "../tools/tool-context.js";

/** Takes one of the tenant's connection slots (see ConnectionShare); a promise when it must wait. */
export type TakeSlot = () => Release | Promise<Release>;

/** The statements that bind a transaction to a tenant; run first, on the transaction's connection. */
export type EnterTenant = ((tx: Queryable) => Promise<void>) & {
  /** The same binding as one parameter-free statement, which the database may send with BEGIN. */
  prelude?: string;
  /** The same binding as one parameterised statement returning no rows, sent ahead of a statement. */
  binding: Binding;
  /** Ends every tenant transaction: resets the session state its statements left (`SESSION_RESET`). */
  reset: string;
};

const ROLLBACK = Symbol("rollback");

/** A tenant transaction's options: the binding sent with BEGIN (when it has that form), and the reset that ends it. */
function transactionOptions(enter: EnterTenant): TransactionOptions {
  return enter.prelude ? { begin: enter.prelude, reset: enter.reset } : { reset: enter.reset };
}

/** What every `ctx.db.query` refuses: use after the call, and arguments of the wrong kind. */
function checkQuery(finished: boolean, text: unknown, params: unknown): void {
  if (finished) throw new TenantryError("internal", "ctx.db used after the tool call ended");
  if (typeof text !== "string") throw new TenantryError("invalid_argument", "query text must be a string");
  if (params !== undefined && !Array.isArray(params)) {
    throw new TenantryError("invalid_argument", "query parameters must be an array");
  }
}

/**
 * `ctx.db` for one tool call. The first query opens ONE transaction on ONE connection, binds it to
 * the tenant (`set_config(…, true)`, `SET LOCAL` semantics: gone at COMMIT), and every later query of
 * the call runs on it. `finish(true)` commits, `finish(false)` rolls back. Nothing is opened for a
 * tool that never touches the database. Queries after `finish` are refused.
 *
 * There is no parameter through which a caller could name a tenant: the binding is fixed at
 * construction. On PostgreSQL a pool of `database.pool_size` connections serves concurrent calls,
 * each call holding one connection, and one of its tenant's slots (`takeSlot`), from its first
 * query to `finish`; PGlite runs them one at a time.
 *
 * @example
 * const db = isolation.open(record);
 * try { await db.query("INSERT INTO notes (title, body) VALUES ($1, $2)", [t, b]); await db.finish(true); }
 * catch (e) { await db.finish(false); throw e; }
 */
export class TenantTransaction implements TenantDb {
  readonly #db: Database;
  readonly #enter: EnterTenant;
  readonly #takeSlot: TakeSlot | undefined;
  #tx: Promise<Queryable> | undefined;
  #done: Promise<unknown> | undefined;
  #release: ((commit: boolean) => void) | undefined;
  #finished = false;

  constructor(db: Database, enter: EnterTenant, takeSlot?: TakeSlot) {
    this.#db = db;
    this.#enter = enter;
    this.#takeSlot = takeSlot;
  }

  /** Runs one parameterised statement inside the call's tenant transaction. */
  async query<R extends Row = Row>(text: string, params?: readonly unknown[]): Promise<QueryResult<R>> {
    checkQuery(this.#finished, text, params);
    const tx = await this.#begin();
    return tx.query<R>(text, params);
  }

  #begin(): Promise<Queryable> {
    if (this.#tx) return this.#tx;
    const prelude = this.#enter.prelude;
    const slot = this.#takeSlot?.();
    this.#tx = new Promise<Queryable>((resolveTx, rejectTx) => {
      const gate = new Promise<boolean>((resolve) => {
        this.#release = resolve;
      });
      const run = (releaseSlot: Release | undefined): Promise<unknown> => {
        const done = this.#db
          .transaction(async (tx) => {
            if (!prelude) await this.#enter(tx);
            resolveTx(tx);
            if (!(await gate)) throw ROLLBACK;
          }, transactionOptions(this.#enter))
          .catch((error: unknown) => {
            rejectTx(error);
            if (error !== ROLLBACK) throw error;
          });
        // The slot is the tenant's until its connection is back in the pool.
        return releaseSlot ? done.finally(releaseSlot) : done;
      };
      // Over its share, the call waits for a slot (the gate still decides commit or rollback).
      this.#done =
        slot instanceof Promise
          ? slot.then(run, (error: unknown) => {
              rejectTx(error);
              throw error;
            })
          : run(slot);
      // `finish` reports the failure; until it is called the rejection must not count as unhandled.
      this.#done.catch(() => {});
    });
    // A tool that catches its own query error would otherwise leave this rejection unobserved.
    this.#tx.catch(() => {});
    return this.#tx;
  }

  /**
   * Ends the call's transaction: commit when `ok`, else roll back. Resolves once the connection is
   * free; rejects when BEGIN, the tenant binding or COMMIT failed (the writes were not kept).
   */
  async finish(ok: boolean): Promise<void> {
    if (this.#finished) return;
    this.#finished = true;
    if (!this.#tx) return;
    // If BEGIN or the tenant binding failed, the gate is never awaited; releasing is harmless.
    this.#release?.(ok);
    await this.#done;
  }
}

/**
 * `ctx.db` of a tool declared with `transaction: "statement"`: each query is its own transaction,
 * bound to the tenant. On PostgreSQL the binding and the statement leave in one write and run in
 * one implicit transaction (one round trip; the binding ends with the statement); elsewhere each
 * query runs in a transaction of its own. As with {@link TenantTransaction}, no parameter can name
 * a tenant, and queries after `finish` are refused.
 */
export class TenantStatements implements TenantDb {
  readonly #db: Database;
  readonly #enter: EnterTenant;
  readonly #takeSlot: TakeSlot | undefined;
  #finished = false;

  constructor(db: Database, enter: EnterTenant, takeSlot?: TakeSlot) {
    this.#db = db;
    this.#enter = enter;
    this.#takeSlot = takeSlot;
  }

  async query<R extends Row = Row>(text: string, params?: readonly unknown[]): Promise<QueryResult<R>> {
    checkQuery(this.#finished, text, params);
    // Each statement holds one of the tenant's connection slots while it runs.
    const slot = this.#takeSlot?.();
    if (slot === undefined) return this.#run<R>(text, params);
    const release = slot instanceof Promise ? await slot : slot;
    try {
      return await this.#run<R>(text, params);
    } finally {
      release();
    }
  }

  #run<R extends Row>(text: string, params: readonly unknown[] | undefined): Promise<QueryResult<R>> {
    if (this.#db.bound) return this.#db.bound<R>(this.#enter.binding, text, params ?? []);
    const prelude = this.#enter.prelude;
    return this.#db.transaction(async (tx) => {
      if (!prelude) await this.#enter(tx);
      return tx.query<R>(text, params ?? []);
    }, transactionOptions(this.#enter));
  }

  /** Refuses later queries; there is nothing to commit. */
  finish(_ok: boolean): undefined {
    this.#finished = true;
    return undefined;
  }
}
