import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import type { Database, Queryable } from "../db/database.js";
import { TenantryError } from "../errors.js";
import { type TenantRecord, tenantToJson } from "../tenancy/tenant.js";
import { isValidTenantId } from "../tenancy/tenant-id.js";
import type { DataIsolation } from "./data-isolation.js";
import { schemaScope } from "./migrations.js";
import { quoteIdent, schemaNameForKey, storagePrefixForKey } from "./names.js";
import { validateStorageKey } from "./storage/keys.js";
import type { ObjectStore } from "./storage/object-store.js";
import type { IsolationName } from "./strategy.js";

/** The storage marker written at provisioning, outside every tenant's visible prefix. */
export function markerKey(tenantKey: string): string {
  return `_tenantry/markers/${tenantKey}.json`;
}

export const ARCHIVE_FORMAT = 1;
export const MANIFEST_FILE = "manifest.json";

/** One table's rows in an archive: `file` holds one JSON object per line (`to_jsonb(row)`). */
export interface ArchivedTable {
  readonly name: string;
  readonly file: string;
  readonly rows: number;
  /** Columns as they were (generated columns excluded): what restore inserts. */
  readonly columns: readonly string[];
  readonly bytes: number;
  readonly sha256: string;
}

/** One object: `key` is tenant-relative (no `t/<key>/` prefix), its bytes are in `file`. */
export interface ArchivedObject {
  readonly key: string;
  readonly file: string;
  readonly bytes: number;
  readonly sha256: string;
}

/** `manifest.json`: what an archive holds, with a sha256 of every other file in it. */
export interface ArchiveManifest {
  readonly format: typeof ARCHIVE_FORMAT;
  readonly created_at: string;
  readonly strategy: IsolationName;
  /** The registry record at archive time (`tenantToJson`). */
  readonly tenant: Record<string, unknown> & { id: string; name: string };
  readonly tables: readonly ArchivedTable[];
  readonly objects: readonly ArchivedObject[];
}

export interface TenantDataDeps {
  /** The owner connection: reads and writes every tenant (under forced RLS, bound to one per transaction). */
  db: Database;
  isolation: DataIsolation;
  objects: ObjectStore;
}

interface TableRef {
  readonly oid: number;
  readonly schema: string;
  readonly name: string;
  readonly qualified: string;
}

const FETCH_ROWS = 500;
const INSERT_BATCH_BYTES = 4 * 1024 * 1024;
const TABLE_FILE = /^rows\/\d{4}[A-Za-z0-9_-]*\.jsonl$/;
const OBJECT_FILE = /^objects\/\d{6,}$/;
const BIND = "SELECT set_config('app.tenant_id', $1, true)";

const sha256 = (bytes: Uint8Array | string) => createHash("sha256").update(bytes).digest("hex");

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
    return this.#d.isolation.strategy === "schema_per_tenant";
  }

  /**
   * Writes the tenant's rows and objects to `<archiveRoot>/<id>-<timestamp>/` and returns the
   * directory. The directory appears complete or not at all (written beside it, then renamed).
   */
  async archive(
    record: TenantRecord,
    archiveRoot: string,
  ): Promise<{ path: string; manifest: ArchiveManifest }> {
    const stamp = new Date().toISOString().replace(/[-:.]/g, "");
    const root = resolve(archiveRoot);
    const final = join(root, `${record.id}-${stamp}`);
    const partial = join(root, `.${record.id}-${stamp}.partial`);
    await mkdir(join(partial, "rows"), { recursive: true, mode: 0o700 });
    await mkdir(join(partial, "objects"), { recursive: true, mode: 0o700 });
    try {
      const tables = await this.#archiveRows(record, partial);
      const objects = await this.#archiveObjects(record, partial);
      const manifest: ArchiveManifest = {
        format: ARCHIVE_FORMAT,
        created_at: new Date().toISOString(),
        strategy: this.#d.isolation.strategy,
        tenant: tenantToJson(record) as ArchiveManifest["tenant"],
        tables,
        objects,
      };
      await writeFile(join(partial, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`, {
        mode: 0o600,
      });
      await rename(partial, final);
      return { path: final, manifest };
    } catch (error) {
      await rm(partial, { recursive: true, force: true }).catch(() => {});
      throw error;
    }
  }

  async #archiveRows(record: TenantRecord, dir: string): Promise<ArchivedTable[]> {
    return this.#d.db.transaction(async (tx) => {
      // One snapshot for every table: the archive is consistent across them.
      await tx.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
      await tx.query(BIND, [record.id]);
      const out: ArchivedTable[] = [];
      const tables = await this.#tables(tx, record);
      for (const [i, table] of tables.entries()) {
        const columns = await this.#columns(tx, table);
        const file = `rows/${String(i).padStart(4, "0")}-${table.name.replace(/[^A-Za-z0-9_]/g, "_").slice(0, 60)}.jsonl`;
        const handle = await open(join(dir, file), "wx", 0o600);
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
            await handle.write(buf);
          }
          await tx.query("CLOSE tenantry_archive");
        } finally {
          await handle.close();
        }
        out.push({ name: table.name, file, rows, columns, bytes, sha256: hash.digest("hex") });
      }
      return out;
    });
  }

  async #archiveObjects(record: TenantRecord, dir: string): Promise<ArchivedObject[]> {
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
        const body = await this.#d.objects.get(full);
        if (body === undefined) continue; // deleted while listing
        const file = `objects/${String(out.length).padStart(6, "0")}`;
        await writeFile(join(dir, file), body, { flag: "wx", mode: 0o600 });
        out.push({ key: full.slice(prefix.length), file, bytes: body.byteLength, sha256: sha256(body) });
      }
      cursor = page.nextCursor;
    } while (cursor !== undefined);
    return out;
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
        const tables = await this.#tables(tx, record);
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
   */
  async restore(
    record: TenantRecord,
    archivePath: string,
    manifest: ArchiveManifest,
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
      const tables = await this.#tables(tx, record);
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
        await this.#insertRows(tx, record, table, entry, join(archivePath, entry.file));
      }
    });
    const prefix = storagePrefixForKey(record.key);
    for (const o of manifest.objects) {
      const body = await readFile(join(archivePath, o.file));
      await this.#d.objects.put(
        prefix + o.key,
        new Uint8Array(body.buffer, body.byteOffset, body.byteLength),
      );
    }
    return { skipped };
  }

  async #insertRows(
    tx: Queryable,
    record: TenantRecord,
    table: TableRef,
    entry: ArchivedTable,
    file: string,
  ): Promise<void> {
    const target = await this.#columns(tx, table);
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
    for await (const line of createInterface({
      input: createReadStream(file, "utf8"),
      crlfDelay: Number.POSITIVE_INFINITY,
    })) {
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

  /** Tables holding the tenant's rows, parents before children (foreign keys). */
  async #tables(tx: Queryable, record: TenantRecord): Promise<TableRef[]> {
    let rows: { oid: number; schema: string; name: string }[];
    if (this.#perSchema) {
      rows = (
        await tx.query<{ oid: number; schema: string; name: string }>(
          `SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
            ORDER BY c.relname`,
          [schemaNameForKey(record.key)],
        )
      ).rows;
    } else {
      const names = [...new Set(this.#d.isolation.migrations.flatMap((m) => m.tenantTables))];
      rows = (
        await tx.query<{ oid: number; schema: string; name: string }>(
          `SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relname = ANY($1::text[]) AND c.relkind IN ('r', 'p')
            ORDER BY c.relname`,
          [names],
        )
      ).rows;
      for (const r of rows) {
        const has = await tx.query(
          "SELECT 1 FROM pg_attribute WHERE attrelid = $1::oid AND attname = 'tenant_id' AND NOT attisdropped",
          [r.oid],
        );
        if (has.rowCount === 0) {
          throw new TenantryError("unsafe_schema", `tenant table ${r.name} has no tenant_id column`);
        }
      }
    }
    const refs = rows.map((r) => ({
      oid: Number(r.oid),
      schema: r.schema,
      name: r.name,
      qualified: `${quoteIdent(r.schema)}.${quoteIdent(r.name)}`,
    }));
    if (refs.length < 2) return refs;
    const fks = await tx.query<{ child: number; parent: number }>(
      `SELECT conrelid::int AS child, confrelid::int AS parent FROM pg_constraint
        WHERE contype = 'f' AND conrelid = ANY($1::oid[]) AND confrelid = ANY($1::oid[]) AND conrelid <> confrelid`,
      [refs.map((r) => r.oid)],
    );
    return parentsFirst(
      refs,
      fks.rows.map((f) => [Number(f.child), Number(f.parent)] as const),
    );
  }

  async #columns(tx: Queryable, table: TableRef): Promise<string[]> {
    const r = await tx.query<{ attname: string }>(
      `SELECT attname FROM pg_attribute
        WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
        ORDER BY attnum`,
      [table.oid],
    );
    return r.rows.map((c) => c.attname);
  }
}

/** Orders tables so that every referenced table comes before the tables referencing it. */
function parentsFirst(tables: TableRef[], edges: readonly (readonly [number, number])[]): TableRef[] {
  const out: TableRef[] = [];
  const state = new Map<number, "visiting" | "done">();
  const byOid = new Map(tables.map((t) => [t.oid, t]));
  const visit = (t: TableRef) => {
    if (state.get(t.oid)) return; // done, or a cycle: keep the order we have
    state.set(t.oid, "visiting");
    for (const [child, parent] of edges) {
      if (child === t.oid) {
        const p = byOid.get(parent);
        if (p) visit(p);
      }
    }
    state.set(t.oid, "done");
    out.push(t);
  };
  for (const t of tables) visit(t);
  return out;
}

/** `pg_get_serial_sequence` returns an already quoted, qualified name; check it is one. */
function seqIdent(name: string): string {
  if (!/^("([^"]|"")+"|[a-z_][a-z0-9_$]*)\.("([^"]|"")+"|[a-z_][a-z0-9_$]*)$/.test(name)) {
    throw new TenantryError("internal", "unexpected sequence name");
  }
  return name;
}

/**
 * Reads an archive's manifest and checks it: shape, file names, and the sha256 and size of every
 * file it lists. Throws `invalid_argument` naming the first problem; nothing is restored from an
 * archive that fails.
 */
export async function readArchive(path: string): Promise<ArchiveManifest> {
  let manifest: ArchiveManifest;
  try {
    manifest = JSON.parse(await readFile(join(path, MANIFEST_FILE), "utf8")) as ArchiveManifest;
  } catch (error) {
    throw new TenantryError("invalid_argument", `${path}: no readable ${MANIFEST_FILE}`, { cause: error });
  }
  const bad = (why: string): never => {
    throw new TenantryError("invalid_argument", `${path}: ${why}`);
  };
  if (typeof manifest !== "object" || manifest === null) bad("the manifest is not an object");
  if (manifest.format !== ARCHIVE_FORMAT) bad(`unsupported archive format ${String(manifest.format)}`);
  const tenant = manifest.tenant;
  if (typeof tenant !== "object" || tenant === null || !isValidTenantId(tenant.id)) bad("no valid tenant id");
  if (typeof tenant.name !== "string" || tenant.name === "") bad("no tenant name");
  if (!Array.isArray(manifest.tables) || !Array.isArray(manifest.objects)) bad("tables or objects missing");
  const files = new Set<string>();
  const names = new Set<string>();
  for (const t of manifest.tables) {
    if (typeof t.name !== "string" || t.name.length === 0 || t.name.length > 63 || names.has(t.name)) {
      bad("a table has no valid or a duplicate name");
    }
    names.add(t.name);
    if (typeof t.file !== "string" || !TABLE_FILE.test(t.file) || files.has(t.file))
      bad(`bad file name for table ${t.name}`);
    files.add(t.file);
    if (
      !Array.isArray(t.columns) ||
      t.columns.some((c) => typeof c !== "string" || c.length === 0 || c.length > 63)
    ) {
      bad(`bad column list for table ${t.name}`);
    }
    await verifyFile(path, t.file, t.sha256, t.bytes);
    if (!Number.isSafeInteger(t.rows) || (await countLines(join(path, t.file))) !== t.rows) {
      bad(`${t.file} does not hold ${String(t.rows)} rows`);
    }
  }
  const keys = new Set<string>();
  for (const o of manifest.objects) {
    try {
      validateStorageKey(o.key);
    } catch {
      bad(`object key ${JSON.stringify(String(o.key).slice(0, 60))} is not valid`);
    }
    if (keys.has(o.key)) bad(`object key ${o.key} appears twice`);
    keys.add(o.key);
    if (typeof o.file !== "string" || !OBJECT_FILE.test(o.file) || files.has(o.file))
      bad(`bad file name for object ${o.key}`);
    files.add(o.file);
    await verifyFile(path, o.file, o.sha256, o.bytes);
  }
  return manifest;
}

async function verifyFile(dir: string, file: string, expected: unknown, bytes: unknown): Promise<void> {
  const full = join(dir, file);
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(full);
  } catch (error) {
    throw new TenantryError("invalid_argument", `${dir}: ${file} is missing`, { cause: error });
  }
  if (!info.isFile() || info.size !== bytes) {
    throw new TenantryError(
      "invalid_argument",
      `${dir}: ${file} does not have the size the manifest records`,
    );
  }
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(full)) hash.update(chunk as Buffer);
  if (hash.digest("hex") !== expected) {
    throw new TenantryError("invalid_argument", `${dir}: checksum mismatch for ${file}`);
  }
}

async function countLines(file: string): Promise<number> {
  let n = 0;
  for await (const line of createInterface({
    input: createReadStream(file, "utf8"),
    crlfDelay: Number.POSITIVE_INFINITY,
  })) {
    if (line !== "") n++;
  }
  return n;
}
