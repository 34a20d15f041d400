import { mkdir } from "node:fs/promises";
import { PGlite, type Transaction } from "@electric-sql/pglite";
import type { Database, Queryable, QueryResult, Row } from "./database.js";

function wrap(q: PGlite | Transaction): Queryable {
  return {
    async query<R extends Row>(text: string, params: readonly unknown[] = []): Promise<QueryResult<R>> {
      const result = await q.query<R>(text, params as unknown[]);
      return { rows: result.rows, rowCount: result.affectedRows ?? result.rows.length };
    },
  };
}

/** Embedded PostgreSQL (WASM). One connection: statements and transactions are serialised. */
export class PgliteDatabase implements Database {
  readonly kind = "pglite" as const;
  readonly #db: PGlite;
  readonly #q: Queryable;

  private constructor(db: PGlite) {
    this.#db = db;
    this.#q = wrap(db);
  }

  /** Opens (or creates) a database in `dataDir`; in memory when `dataDir` is undefined. */
  static async open(dataDir: string | undefined): Promise<PgliteDatabase> {
    if (dataDir) await mkdir(dataDir, { recursive: true });
    const db = dataDir ? new PGlite(dataDir) : new PGlite();
    await db.waitReady;
    return new PgliteDatabase(db);
  }

  query<R extends Row = Row>(text: string, params?: readonly unknown[]): Promise<QueryResult<R>> {
    return this.#q.query<R>(text, params);
  }

  async exec(sql: string): Promise<void> {
    await this.#db.exec(sql);
  }

  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.#db.transaction((tx) => fn(wrap(tx)));
  }

  async listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>> {
    return this.#db.listen(channel, onPayload);
  }

  async close(): Promise<void> {
    if (!this.#db.closed) await this.#db.close();
  }
}
