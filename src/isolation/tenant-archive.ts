import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { TenantryError } from "../errors.js";
import { isValidTenantId } from "../tenancy/tenant-id.js";
import { validateStorageKey } from "./storage/keys.js";
import type { IsolationName } from "./strategy.js";

/*
 * The on-disk form of one tenant's archive (written by TenantData.archive):
 *   manifest.json        format, tenant record, and the sha256 and size of every other file
 *   rows/NNNN-<table>.jsonl   one `to_jsonb(row)` per line
 *   objects/NNNNNN       one object's bytes; the manifest maps it to its tenant-relative key
 */

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

/** File names TenantData writes; anything else in a manifest is refused (no `..`, no absolute path). */
export const TABLE_FILE = /^rows\/\d{4}[A-Za-z0-9_-]*\.jsonl$/;
export const OBJECT_FILE = /^objects\/\d{6,}$/;

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
  for await (const _ of checked(createReadStream(full), dir, {
    file,
    bytes: info.size,
    sha256: String(expected),
  }));
}

/**
 * Yields `chunks` (an archived object's or table's file) while hashing and counting them; throws
 * `invalid_argument` as soon as they exceed the recorded size, or when size or sha256 differ at
 * the end. readArchive checks every file with it, restore every byte it copies (a second read).
 * The last chunk is held back until the check has passed, so that a
 * store never receives the whole of a body that fails it: fs writes a temp file it then removes,
 * and an S3 PUT of the recorded length is abandoned short (S3 is also given the sha256 to check).
 */
export async function* checked(
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  archivePath: string,
  o: { readonly file: string; readonly bytes: number; readonly sha256: string },
): AsyncGenerator<Uint8Array> {
  const hash = createHash("sha256");
  let bytes = 0;
  let held: Uint8Array | undefined;
  const mismatch = () =>
    new TenantryError("invalid_argument", `${archivePath}: checksum mismatch for ${o.file}`);
  for await (const chunk of chunks) {
    bytes += chunk.byteLength;
    if (bytes > o.bytes) throw mismatch();
    hash.update(chunk);
    if (held !== undefined) yield held;
    held = chunk;
  }
  if (bytes !== o.bytes || hash.digest("hex") !== o.sha256) throw mismatch();
  if (held !== undefined) yield held;
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
