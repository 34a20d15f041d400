import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, unlink } from "node:fs/promises";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { Readable } from "node:stream";
import type { Database, Queryable } from "../db/database.js";
import { TenantryError } from "../errors.js";
import { type TenantRecord, tenantToJson } from "../tenancy/tenant.js";
import {
  type ArchiveWrite,
  archiveWrite,
  syncDir,
  syncNewDirs,
  writeAll,
  writeSynced,
} from "./archive-write.js";
import type { DataIsolation } from "./data-isolation.js";
import { schemaScope } from "./migrations.js";
import { quoteIdent, schemaNameForKey, storagePrefixForKey } from "./names.js";
import { type ObjectStore, readFailures } from "./storage/object-store.js";
import { usesSchemas } from "./strategy.js";
import {
  ARCHIVE_FORMAT,
  type ArchivedObject,
  type ArchivedTable,
  type ArchiveManifest,
  checked,
  MANIFEST_FILE,
} from "./tenant-archive.js";
import { insertableColumns, type TableRef, tenantTables } from "./tenant-tables.js";

/** The storage marker written at provisioning, outside every tenant's visible prefix. */
export function markerKey(tenantKey: string): string {
  return `_tenantry/markers/${tenantKey}.json`;
}

export interface TenantDataDeps {
  /** The owner connection: reads and writes every tenant (under forced RLS, bound to one per transaction). */
  db: Database;
  isolation: DataIsolation;
  objects: ObjectStore;
  /**
   * `[storage] max_object_bytes`: the largest object archived from a store without
   * {@link ObjectStore.getStream}, which must be read whole (default 10 MiB). Streaming stores
   * (fs, S3) archive objects of any size, a chunk at a time.
   */
  maxObjectBytes?: number;
}

const FETCH_ROWS = 500;
const DEFAULT_MAX_OBJECT_BYTES = 10 * 1024 * 1024;
const INSERT_BATCH_BYTES = 4 * 1024 * 1024;
const BIND = "SELECT set_config('app.tenant_id', $1, true)";

/**
 * One tenant's data, whole: archive it (rows of every tenant table and every object under its
 * prefix, into a directory with a checksummed manifest), erase it, and restore it from an archive.
 *
 * Rows are read and written as the owner inside one transaction bound to the tenant
 * (`app.tenant_id`), so forced RLS policies hold for these statements too, and every statement also
 * filters on `tenant_id` (row_level_security) or names only the tenant's schema (schema_per_tenant).
 * Rows travel as PostgreSQL's own JSON (`to_jsonb` out, `jsonb_populate_recordset` in): values are
 * never parsed in JavaScript, so numerics, bytea and timestamps come back exactly.
 */
export class TenantData {
  readonly #d: TenantDataDeps;

  constructor(deps: TenantDataDeps) {
    this.#d = deps;
  }

  get #perSchema(): boolean {
    return usesSchemas(this.#d.isolation.strategy);
  }

  /**
   * Writes the tenant's rows and objects to `<archiveRoot>/<id>-<timestamp>/` and returns the
   * directory. The directory appears complete or not at all (written beside it, then renamed), and
   * it is durable when this returns: every file is fsynced before it is closed, every directory
   * after its entries are written, and `archiveRoot` after the rename. After `purge` the archive is
   * the only copy of the tenant's data, and the registry is marked deprovisioned right after this;
   * without the syncs a crash or power loss could leave that mark pointing at truncated or empty
   * files, or at a rename the file system never recorded.
   */
  async archive(
    record: TenantRecord,
    archiveRoot: string,
  ): Promise<{ path: string; manifest: ArchiveManifest }> {
    const stamp = new Date().toISOString().replace(/[-:.]/g, "");
    const root = resolve(archiveRoot);
    const final = join(root, `${record.id}-${stamp}`);
    const partial = join(root, `.${record.id}-${stamp}.partial`);
    const write = <T>(run: () => Promise<T>) => archiveWrite(archiveRoot, run);
    try {
      // archive_dir itself, on the first archive: its new entry in its parent must last too.
      const created = await write(() => mkdir(root, { recursive: true, mode: 0o700 }));
      if (created !== undefined) await write(() => syncNewDirs(created, root));
      await write(() => mkdir(join(partial, "rows"), { recursive: true, mode: 0o700 }));
      await write(() => mkdir(join(partial, "objects"), { recursive: true, mode: 0o700 }));
      const tables = await this.#archiveRows(record, partial, write);
      await write(() => syncDir(join(partial, "rows")));
      const objects = await this.#archiveObjects(record, partial, write);
      await write(() => syncDir(join(partial, "objects")));
      const manifest: ArchiveManifest = {
        format: ARCHIVE_FORMAT,
        created_at: new Date().toISOString(),
        strategy: this.#d.isolation.strategy,
        tenant: tenantToJson(record) as ArchiveManifest["tenant"],
        tables,
        objects,
      };
      // Last: a directory holding a manifest holds every file it lists.
      await write(() => writeSynced(join(partial, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`));
      // Its entries (rows/, objects/, the manifest) before the rename makes it the archive.
      await write(() => syncDir(partial));
      await write(() => rename(partial, final));
      // The rename is an entry of archive_dir: until that is synced it may be lost in a crash.
      await write(() => syncDir(root));
      return { path: final, manifest };
    } catch (error) {
      await rm(partial, { recursive: true, force: true }).catch(() => {});
      throw error;
    }
  }

  async #archiveRows(record: TenantRecord, dir: string, write: ArchiveWrite): Promise<ArchivedTable[]> {
    return this.#d.db.transaction(async (tx) => {
      // One snapshot for every table: the archive is consistent across them.
      await tx.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
      await tx.query(BIND, [record.id]);
      const out: ArchivedTable[] = [];
      const tables = await tenantTables(tx, this.#d.isolation, record);
      for (const [i, table] of tables.entries()) {
        const columns = await insertableColumns(tx, table);
        const file = `rows/${String(i).padStart(4, "0")}-${table.name.replace(/[^A-Za-z0-9_]/g, "_").slice(0, 60)}.jsonl`;
        const handle = await write(() => open(join(dir, file), "wx", 0o600));
        const hash = createHash("sha256");
        let rows = 0;
        let bytes = 0;
        try {
          const filter = this.#perSchema ? "" : " WHERE t.tenant_id = current_setting('app.tenant_id')";
          await tx.query(
            `DECLARE tenantry_archive NO SCROLL CURSOR FOR SELECT to_jsonb(t)::text AS j FROM ${table.qualified} t${filter}`,
          );
          for (;;) {
            const page = await tx.query<{ j: string }>(`FETCH ${FETCH_ROWS} FROM tenantry_archive`);
            if (page.rows.length === 0) break;
            const chunk = `${page.rows.map((r) => r.j).join("\n")}\n`;
            const buf = Buffer.from(chunk, "utf8");
            hash.update(buf);
            bytes += buf.byteLength;
            rows += page.rows.length;
            await write(() => writeAll(handle, buf));
          }
          await tx.query("CLOSE tenantry_archive");
          await write(() => handle.sync());
        } finally {
          await write(() => handle.close());
        }
        out.push({ name: table.name, file, rows, columns, bytes, sha256: hash.digest("hex") });
      }
      return out;
    });
  }

  async #archiveObjects(record: TenantRecord, dir: string, write: ArchiveWrite): Promise<ArchivedObject[]> {
    const prefix = storagePrefixForKey(record.key);
    const out: ArchivedObject[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.#d.objects.list(
        prefix,
        cursor === undefined ? { limit: 1000 } : { cursor, limit: 1000 },
      );
      for (const full of page.keys) {
        if (!full.startsWith(prefix)) continue;
        const file = `objects/${String(out.length).padStart(6, "0")}`;
        const copied = await this.#copyObject(full, join(dir, file), write);
        if (copied === undefined) continue; // deleted while listing
        out.push({ key: full.slice(prefix.length), file, ...copied });
      }
      cursor = page.nextCursor;
    } while (cursor !== undefined);
    return out;
  }

  /**
   * Copies one object into the new archive file `file`, hashing as it goes; `undefined` when the
   * object is gone. Streamed when the store can: an object planted in the bucket or directory,
   * whatever its size, never sits in memory whole. A store without `getStream` is read whole,
   * bounded by `max_object_bytes`: a larger object fails the archive (and the deprovision, which
   * leaves the tenant suspended) with `payload_too_large`. A read that fails part-way fails it
   * with `backend_unavailable`, whatever the store threw; so does a write to the archive file,
   * or its fsync. The file is written through a FileHandle of our own so that it can be synced
   * before it is closed.
   */
  async #copyObject(
    full: string,
    file: string,
    write: ArchiveWrite,
  ): Promise<{ bytes: number; sha256: string } | undefined> {
    const store = this.#d.objects;
    // The file first, the object second: an object opened for a file that then cannot be created
    // (EEXIST, ENOSPC, EMFILE) would be left open, an fs descriptor or an S3 socket, never read.
    const handle = await write(() => open(file, "wx", 0o600));
    const hash = createHash("sha256");
    let bytes = 0;
    let gone = false;
    try {
      const body =
        store.getStream !== undefined
          ? await store.getStream(full)
          : await store.get(full, { maxBytes: this.#d.maxObjectBytes ?? DEFAULT_MAX_OBJECT_BYTES });
      if (body === undefined) {
        gone = true;
      } else {
        const source: AsyncIterable<Uint8Array> =
          body instanceof Uint8Array
            ? (async function* () {
                yield body;
              })()
            : readFailures(body); // the stores map their read errors; another store may not
        // One chunk at a time: awaiting each write is the back-pressure.
        for await (const chunk of source) {
          hash.update(chunk);
          bytes += chunk.byteLength;
          await write(() => writeAll(handle, chunk));
        }
        await write(() => handle.sync());
      }
    } finally {
      await write(() => handle.close());
    }
    if (gone) {
      // Deleted while listing: the next object's file takes this name.
      await write(() => unlink(file));
      return undefined;
    }
    return { bytes, sha256: hash.digest("hex") };
  }

  /**
   * Deletes every row of the tenant (row_level_security: `DELETE … WHERE tenant_id`, children
   * first; schema_per_tenant: `DROP SCHEMA … CASCADE` and the schema's migration records), every
   * object under its prefix, and its storage marker. Idempotent. Touches nothing of any other tenant.
   */
  async erase(record: TenantRecord): Promise<{ rows: number; objects: number }> {
    let rows = 0;
    if (this.#perSchema) {
      const schema = schemaNameForKey(record.key);
      await this.#d.db.transaction(async (tx) => {
        await tx.query(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE`);
        // Its migration records go too: a re-provisioned schema must be migrated from scratch.
        await tx.query("DELETE FROM public.tenantry_migrations WHERE scope = $1", [schemaScope(schema)]);
      });
    } else {
      rows = await this.#d.db.transaction(async (tx) => {
        await tx.query(BIND, [record.id]);
        const tables = await tenantTables(tx, this.#d.isolation, record);
        let n = 0;
        for (const table of [...tables].reverse()) {
          const r = await tx.query(
            `DELETE FROM ${table.qualified} WHERE tenant_id = current_setting('app.tenant_id')`,
          );
          n += r.rowCount;
        }
        return n;
      });
    }
    const objects = await this.#d.objects.deletePrefix(storagePrefixForKey(record.key));
    await this.#d.objects.delete(markerKey(record.key));
    return { rows, objects };
  }

  /**
   * Loads an archive's rows and objects into `record`, which must be freshly provisioned (its tables
   * empty). Rows keep their `tenant_id`, which must be this tenant's; sequences are moved past the
   * restored values. Tables that provisioning already filled and that are not app tenant tables
   * (bookkeeping such as a per-schema migrations table) are left as provisioning wrote them.
   *
   * `stillHeld` is called before each table's rows, before they commit, and before each object,
   * and throws if the caller may no longer write this tenant (its hold on it is gone): whatever it
   * throws fails the restore there, the rows rolled back.
   */
  async restore(
    record: TenantRecord,
    archivePath: string,
    manifest: ArchiveManifest,
    stillHeld: () => void = () => {},
  ): Promise<{ skipped: string[] }> {
    if (manifest.tenant.id !== record.id) {
      throw new TenantryError(
        "invalid_argument",
        `the archive is of tenant ${manifest.tenant.id}, not ${record.id}`,
      );
    }
    const skipped: string[] = [];
    const declared = new Set(this.#d.isolation.migrations.flatMap((m) => m.tenantTables));
    await this.#d.db.transaction(async (tx) => {
      await tx.query(BIND, [record.id]);
      const tables = await tenantTables(tx, this.#d.isolation, record);
      const byName = new Map(tables.map((t) => [t.name, t]));
      const archived = new Map(manifest.tables.map((t) => [t.name, t]));
      for (const t of manifest.tables) {
        if (!byName.has(t.name)) {
          throw new TenantryError(
            "invalid_argument",
            `the archive has table ${t.name}, which this deployment lacks`,
          );
        }
      }
      for (const table of tables) {
        const entry = archived.get(table.name);
        if (!entry) continue;
        const filter = this.#perSchema ? "" : " WHERE tenant_id = current_setting('app.tenant_id')";
        const existing = await tx.query(`SELECT 1 FROM ${table.qualified}${filter} LIMIT 1`);
        if (existing.rowCount > 0) {
          if (this.#perSchema && !declared.has(table.name)) {
            skipped.push(table.name);
            continue;
          }
          throw new TenantryError(
            "invalid_argument",
            `table ${table.name} already holds rows of tenant ${record.id}`,
          );
        }
        if (entry.rows === 0) continue;
        stillHeld();
        await this.#insertRows(tx, record, table, entry, archivePath);
      }
      stillHeld(); // the last moment the rows can still be rolled back
    });
    const prefix = storagePrefixForKey(record.key);
    const store = this.#d.objects;
    for (const o of manifest.objects) {
      stillHeld();
      const file = join(archivePath, o.file);
      // readArchive checked size and sha256 on a first read; what is copied is a second read of the
      // file, checked again as it goes, so that a file changed in between fails the restore (which
      // leaves the tenant in `provisioning`, unserved) rather than be restored unchecked.
      if (store.putStream !== undefined) {
        // One chunk at a time, whatever the object's size.
        await store.putStream(prefix + o.key, checked(createReadStream(file), archivePath, o), {
          size: o.bytes,
          sha256: o.sha256,
        });
      } else {
        const body = await readFile(file);
        for await (const _ of checked([body], archivePath, o));
        await store.put(prefix + o.key, new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
      }
    }
    return { skipped };
  }

  async #insertRows(
    tx: Queryable,
    record: TenantRecord,
    table: TableRef,
    entry: ArchivedTable,
    archivePath: string,
  ): Promise<void> {
    const target = await insertableColumns(tx, table);
    const wanted = new Set(entry.columns);
    const columns = target.filter((c) => wanted.has(c));
    if (columns.length === 0) return;
    const list = columns.map(quoteIdent).join(", ");
    const checkTenant = target.includes("tenant_id");
    const insert = `INSERT INTO ${table.qualified} (${list}) OVERRIDING SYSTEM VALUE
      SELECT ${list} FROM jsonb_populate_recordset(NULL::${table.qualified}, $1::jsonb)`;
    const flush = async (lines: string[]) => {
      if (lines.length === 0) return;
      const json = `[${lines.join(",")}]`;
      if (checkTenant) {
        // An archive can be edited: never let one put rows into another tenant.
        const foreign = await tx.query<{ n: string | number }>(
          "SELECT count(*) AS n FROM jsonb_array_elements($1::jsonb) e WHERE e->>'tenant_id' IS DISTINCT FROM $2",
          [json, record.id],
        );
        if (Number(foreign.rows[0]?.n ?? 0) > 0) {
          throw new TenantryError(
            "invalid_argument",
            `the archive's ${table.name} rows belong to another tenant`,
          );
        }
      }
      await tx.query(insert, [json]);
    };
    let batch: string[] = [];
    let size = 0;
    // Checked again as it is read (see restore): a mismatch fails the transaction, nothing is kept.
    const input = Readable.from(checked(createReadStream(join(archivePath, entry.file)), archivePath, entry));
    for await (const line of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
      if (line === "") continue;
      batch.push(line);
      size += line.length;
      if (batch.length >= FETCH_ROWS || size >= INSERT_BATCH_BYTES) {
        await flush(batch);
        batch = [];
        size = 0;
      }
    }
    await flush(batch);
    // Serial and identity columns: move their sequences past the restored values, never back.
    const seqs = await tx.query<{ col: string; seq: string }>(
      `SELECT a.attname AS col, pg_get_serial_sequence($1, a.attname) AS seq
         FROM pg_attribute a
        WHERE a.attrelid = $2::oid AND a.attnum > 0 AND NOT a.attisdropped
          AND pg_get_serial_sequence($1, a.attname) IS NOT NULL`,
      [table.qualified, table.oid],
    );
    for (const { col, seq } of seqs.rows) {
      await tx.query(
        `SELECT setval($1::regclass, GREATEST(m, s.last_value), true)
           FROM (SELECT max(${quoteIdent(col)})::bigint AS m FROM ${table.qualified}) x,
                LATERAL (SELECT last_value FROM ${seqIdent(seq)}) s
          WHERE m IS NOT NULL`,
        [seq],
      );
    }
  }
}

/** `pg_get_serial_sequence` returns an already quoted, qualified name; check it is one. */
function seqIdent(name: string): string {
  if (!/^("([^"]|"")+"|[a-z_][a-z0-9_$]*)\.("([^"]|"")+"|[a-z_][a-z0-9_$]*)$/.test(name)) {
    throw new TenantryError("internal", "unexpected sequence name");
  }
  return name;
}
