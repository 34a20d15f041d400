import { readFileSync } from "node:fs";
import { link, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { PGlite, type Transaction } from "@electric-sql/pglite";
import { TenantryError } from "../errors.js";
import { isRunning } from "../pid.js";
import type {
  Database,
  Queryable,
  QueryResult,
  Row,
  TransactionHandle,
  TransactionOptions,
} from "./database.js";

/** PGlite's version, read from its package.json (not in its `exports`, so found beside its entry point). */
function pgliteVersion(): string {
  let dir: string;
  try {
    dir = dirname(createRequire(import.meta.url).resolve("@electric-sql/pglite"));
  } catch {
    return "unknown";
  }
  for (let i = 0; i < 4; i++, dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === "@electric-sql/pglite" && pkg.version) return pkg.version;
    } catch {}
  }
  return "unknown";
}
const PGLITE_VERSION = pgliteVersion();

function wrap(q: PGlite | Transaction): Queryable {
  return {
    async query<R extends Row>(text: string, params: readonly unknown[] = []): Promise<QueryResult<R>> {
      const result = await q.query<R>(text, params as unknown[]);
      // PGlite reports affectedRows = 0 for a SELECT; pg's rowCount counts the rows returned.
      const rowCount = result.fields.length > 0 ? result.rows.length : (result.affectedRows ?? 0);
      return { rows: result.rows, rowCount };
    },
  };
}

/** A snapshot of a freshly initialised cluster, per PGlite version (the format may change between versions). */
const TEMPLATE = join(tmpdir(), `tenantry-pglite-${PGLITE_VERSION}.tar.gz`);

/** Data directories this process has open (a lock naming our own pid is stale unless listed here). */
const openHere = new Set<string>();

/**
 * PGlite has no lock of its own: a second process opening the same directory keeps its own copy of
 * the cluster and overwrites the first one's files (writes of either vanish). `<dataDir>.lock` names
 * the process that has it open; it is created whole (written aside, then hard-linked), and a lock
 * whose process is gone is taken over.
 */
async function lockDataDir(dataDir: string): Promise<string> {
  const path = `${dataDir}.lock`;
  for (let attempt = 0; attempt < 3; attempt++) {
    const aside = `${path}.${process.pid}`;
    await writeFile(aside, `${process.pid}\n`);
    try {
      await link(aside, path);
      openHere.add(path);
      return path;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    } finally {
      await rm(aside, { force: true });
    }
    const holder = await embeddedDatabaseHolder(dataDir);
    if (holder !== undefined) {
      throw new TenantryError(
        "backend_unavailable",
        `the embedded database in ${dirname(dataDir)} is in use by process ${holder} (a running tenantry dev or serve?): stop it or use another data directory`,
      );
    }
    await rm(path, { force: true });
  }
  throw new TenantryError("backend_unavailable", `cannot lock the embedded database in ${dirname(dataDir)}`);
}

/**
 * The process holding the embedded database in `dataDir` (see {@link lockDataDir}), or undefined
 * when none does: no lock, or one left by a process that is gone. This process counts only while
 * it has the database open.
 */
export async function embeddedDatabaseHolder(dataDir: string): Promise<number | undefined> {
  const path = `${dataDir}.lock`;
  const holder = Number.parseInt(await readFile(path, "utf8").catch(() => ""), 10);
  if (!(holder > 0)) return undefined;
  const held = holder === process.pid ? openHere.has(path) : isRunning(holder);
  return held ? holder : undefined;
}

async function unlock(path: string): Promise<void> {
  openHere.delete(path);
  await rm(path, { force: true });
}

/** Embedded PostgreSQL (WASM). One connection: statements and transactions are serialised. */
export class PgliteDatabase implements Database {
  readonly kind = "pglite" as const;
  readonly #db: PGlite;
  readonly #q: Queryable;
  readonly #lock: string | undefined;

  private constructor(db: PGlite, lock?: string) {
    this.#db = db;
    this.#q = wrap(db);
    this.#lock = lock;
  }

  /**
   * Opens (or creates) a database in `dataDir`; in memory when `dataDir` is undefined. In-memory
   * databases start from a cached snapshot of a fresh cluster (initdb is the slow part, several
   * seconds), which makes test suites that open many of them much faster.
   */
  static async open(dataDir: string | undefined): Promise<PgliteDatabase> {
    if (dataDir) {
      await mkdir(dataDir, { recursive: true });
      const lock = await lockDataDir(dataDir);
      try {
        const db = new PGlite(dataDir);
        await db.waitReady;
        return new PgliteDatabase(db, lock);
      } catch (error) {
        await unlock(lock);
        throw error;
      }
    }
    const snapshot = await readFile(TEMPLATE).catch(() => undefined);
    if (snapshot) {
      try {
        const db = new PGlite({ loadDataDir: new Blob([snapshot]) });
        await db.waitReady;
        return new PgliteDatabase(db);
      } catch {
        // A stale or torn snapshot: fall through and make a fresh one.
      }
    }
    const db = new PGlite();
    await db.waitReady;
    const dump = await db.dumpDataDir("gzip");
    const tmp = `${TEMPLATE}.${process.pid}.${Date.now()}`;
    await writeFile(tmp, Buffer.from(await dump.arrayBuffer()));
    await rename(tmp, TEMPLATE).catch(() => {});
    return new PgliteDatabase(db);
  }

  query<R extends Row = Row>(text: string, params?: readonly unknown[]): Promise<QueryResult<R>> {
    return this.#q.query<R>(text, params);
  }

  async exec(sql: string): Promise<void> {
    await this.#db.exec(sql);
  }

  async transaction<T>(
    fn: (tx: TransactionHandle) => Promise<T>,
    options: TransactionOptions = {},
  ): Promise<T> {
    try {
      return await this.#transaction(fn, options);
    } catch (error) {
      // PGlite has rolled back, which undoes the transaction's session state but for what
      // PostgreSQL keeps past a ROLLBACK (session-level advisory locks above all): the reset runs
      // once it has. A call already queued for the one session may run first; it finds at most a
      // lock its own session holds, which does not block it.
      if (options.reset) await this.#db.exec(options.reset).catch(() => {});
      throw error;
    }
  }

  #transaction<T>(fn: (tx: TransactionHandle) => Promise<T>, options: TransactionOptions): Promise<T> {
    return this.#db.transaction(async (tx) => {
      if (options.begin) await tx.exec(options.begin);
      const value = await fn({
        ...wrap(tx),
        exec: async (sql: string) => {
          await tx.exec(sql);
        },
      });
      if (options.reset) await tx.exec(options.reset);
      return value;
    });
  }

  async listen(
    channel: string,
    onPayload: (payload: string | undefined) => void,
  ): Promise<() => Promise<void>> {
    return this.#db.listen(channel, onPayload);
  }

  async close(): Promise<void> {
    if (!this.#db.closed) await this.#db.close();
    if (this.#lock && openHere.has(this.#lock)) await unlock(this.#lock);
  }
}
