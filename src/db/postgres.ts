import pg from "pg";
import type { Database, QueryResult, Row, TransactionHandle, TransactionOptions } from "./database.js";

export interface PostgresOptions {
  poolSize: number;
  statementTimeoutMs: number;
  applicationName?: string;
}

/** A `pg` pool. Each transaction holds one client from BEGIN to COMMIT/ROLLBACK. */
export class PostgresDatabase implements Database {
  readonly kind = "postgres" as const;
  readonly #pool: pg.Pool;
  readonly #url: string;
  readonly #listeners = new Set<pg.Client>();

  constructor(url: string, options: PostgresOptions) {
    this.#url = url;
    this.#pool = new pg.Pool({
      connectionString: url,
      max: options.poolSize,
      statement_timeout: options.statementTimeoutMs,
      application_name: options.applicationName ?? "tenantry",
      connectionTimeoutMillis: 5000,
    });
    // An idle client that dies (server restart) must not crash the process.
    this.#pool.on("error", () => {});
  }

  async query<R extends Row = Row>(text: string, params: readonly unknown[] = []): Promise<QueryResult<R>> {
    const result = await this.#pool.query<R>(text, params as unknown[]);
    return { rows: result.rows, rowCount: result.rowCount ?? result.rows.length };
  }

  async exec(sql: string): Promise<void> {
    await this.#pool.query(sql);
  }

  async transaction<T>(
    fn: (tx: TransactionHandle) => Promise<T>,
    options: TransactionOptions = {},
  ): Promise<T> {
    const client = await this.#pool.connect();
    const tx: TransactionHandle = {
      async query<R extends Row>(text: string, params: readonly unknown[] = []): Promise<QueryResult<R>> {
        const result = await client.query<R>(text, params as unknown[]);
        return { rows: result.rows, rowCount: result.rowCount ?? result.rows.length };
      },
      async exec(sql: string): Promise<void> {
        await client.query(sql);
      },
    };
    let broken = false;
    try {
      // Simple-query protocol: BEGIN and the prelude travel together, one round trip.
      await client.query(options.begin ? `BEGIN; ${options.begin}` : "BEGIN");
      const value = await fn(tx);
      const end = await client.query("COMMIT");
      // COMMIT of a transaction in which a statement failed rolls back and reports no error; PGlite
      // throws 25P02 there, and so do we: the caller must not believe its writes were kept.
      if (end.command === "ROLLBACK") {
        throw Object.assign(new Error("Transaction was rolled back instead of committed"), { code: "25P02" });
      }
      return value;
    } catch (error) {
      try {
        await client.query("ROLLBACK");
      } catch {
        broken = true; // the connection is unusable: destroy it rather than return it to the pool
      }
      throw error;
    } finally {
      client.release(broken);
    }
  }

  /** LISTEN on a dedicated connection that reconnects after errors. */
  async listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>> {
    let stopped = false;
    let client: pg.Client | undefined;
    let timer: NodeJS.Timeout | undefined;
    const connect = async (): Promise<void> => {
      const c = new pg.Client({ connectionString: this.#url, application_name: "tenantry-listen" });
      c.on("notification", (msg) => {
        if (msg.channel === channel) onPayload(msg.payload ?? "");
      });
      c.on("error", () => {
        this.#listeners.delete(c);
        c.end().catch(() => {});
        if (!stopped) timer = setTimeout(() => void connect().catch(() => {}), 1000);
      });
      try {
        await c.connect();
        await c.query(`LISTEN "${channel.replaceAll('"', '""')}"`);
      } catch (error) {
        c.end().catch(() => {});
        if (stopped) return;
        timer = setTimeout(() => void connect().catch(() => {}), 1000);
        if (!client) throw error;
        return;
      }
      client = c;
      this.#listeners.add(c);
      // A reconnect may have missed notifications: tell the listener to drop everything.
      onPayload("*");
    };
    await connect();
    return async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (client) {
        this.#listeners.delete(client);
        await client.end().catch(() => {});
      }
    };
  }

  async close(): Promise<void> {
    for (const c of this.#listeners) await c.end().catch(() => {});
    this.#listeners.clear();
    await this.#pool.end();
  }
}
