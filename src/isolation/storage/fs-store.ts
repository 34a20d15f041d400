import { randomBytes } from "node:crypto";
import { constants, createWriteStream, type Dirent, type Stats } from "node:fs";
import {
  type FileHandle,
  lstat,
  mkdir,
  open,
  readdir,
  realpath,
  rename,
  rmdir,
  unlink,
  writeFile,
} from "node:fs/promises";
import * as path from "node:path";
import { pipeline } from "node:stream/promises";
import { isTenantryError, TenantryError } from "../../errors.js";
import { compareStorageKeys, validateStorageKey, validateStoragePrefix } from "./keys.js";
import {
  clampListLimit,
  type ObjectGetOptions,
  type ObjectListOptions,
  type ObjectListPage,
  type ObjectPutStreamOptions,
  type ObjectStore,
  objectTooLarge,
  readFailures,
} from "./object-store.js";

/*
 * Layout. Each key segment is escaped to lower-case ASCII (`[a-z0-9._-]` kept, every other UTF-8
 * byte written as `%xx`), so names survive case-insensitive and normalising file systems intact.
 * Directories get the suffix `.d` and objects `.f`: S3 allows both `a` and `a/b` as objects, and
 * distinct suffixes let the file `a.f` sit beside the directory `a.d`. Anything else under the
 * root (the `.tmp` directory, stray files) is not an object and is never listed.
 */
const DIR_SUFFIX = ".d";
const FILE_SUFFIX = ".f";
const TMP_DIR = ".tmp";
/**
 * A temp file older than this was left by a write that never finished (the process died between
 * writing and renaming): the first write of a store removes such files. A write in progress, even
 * another process's on a shared root, is far younger.
 */
const STALE_TMP_MS = 60 * 60 * 1000;
const KEPT_BYTE = /^[a-z0-9._-]$/;
/** NAME_MAX of common file systems; a longer escaped segment cannot be stored here. */
const MAX_NAME_BYTES = 255;

function encodeSegment(segment: string): string {
  let out = "";
  for (const byte of Buffer.from(segment, "utf8")) {
    const ch = String.fromCharCode(byte);
    out += KEPT_BYTE.test(ch) ? ch : `%${byte.toString(16).padStart(2, "0")}`;
  }
  return out;
}

/** The segment a file-system name stands for, or undefined when the name is not one we wrote. */
function decodeSegment(name: string): string | undefined {
  try {
    const segment = decodeURIComponent(name);
    return encodeSegment(segment) === name ? segment : undefined;
  } catch {
    return undefined;
  }
}

function nameOf(segment: string, suffix: string): string {
  return encodeSegment(segment) + suffix;
}

/*
 * Only what Tenantry wrote is an object: a regular file, reached from the root through real
 * directories. Anything with write access to the root (another process, a restored backup) can
 * plant a symbolic link, a FIFO or a socket there. Following a link would read or write outside
 * the root (another tenant's prefix, /etc/passwd); opening a FIFO would wait forever for a writer.
 * Such entries are not objects: `get` answers "no object", as `list` (which never shows them)
 * implies, and `delete` removes at most the entry itself. Not `backend_unavailable`: that invites
 * retries of something that will not heal. A write through a linked directory is refused with
 * `backend_unavailable` (the path only in the cause, for the server's log). Tool code learns no
 * path either way.
 */
const OPEN_OBJECT = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
/** open(2) with O_NOFOLLOW on a link (ELOOP), a socket (ENXIO), a missing name or directory. */
const NOT_AN_OBJECT = new Set(["ELOOP", "ENXIO", "ENOENT", "ENOTDIR", "ENAMETOOLONG"]);
/** A path that names nothing (any more): the object, or a directory on the way, is gone. */
const GONE = new Set(["ENOENT", "ENOTDIR", "ENAMETOOLONG"]);

function errno(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Runs one file-system operation; an I/O failure (disk full, permissions, a broken mount) becomes
 * `backend_unavailable`, as on S3. The errno error, whose message names server paths, is only the
 * cause (for the server's log), never the message tool code sees.
 */
async function io<T>(operation: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (isTenantryError(error)) throw error;
    throw new TenantryError("backend_unavailable", `object store ${operation} failed`, { cause: error });
  }
}

/**
 * Objects as files under a root directory. Writes are atomic (temp file, then rename). Listing
 * walks the directories below the prefix, so it costs O(objects under the prefix): meant for
 * development and single-node deployments. `contentType` is not stored.
 */
export class FsObjectStore implements ObjectStore {
  readonly #root: string;
  #swept: Promise<void> | undefined;

  constructor(root: string) {
    this.#root = path.resolve(root);
  }

  /** Joins escaped names under the root and checks the result stays there (defence in depth). */
  #resolve(names: string[]): string {
    const resolved = path.resolve(this.#root, ...names);
    const relative = path.relative(this.#root, resolved);
    if (relative === ".." || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative)) {
      throw new TenantryError("invalid_storage_key", "storage key maps outside the storage root");
    }
    return resolved;
  }

  #fileFor(fullKey: string): string {
    const segments = validateStorageKey(fullKey).split("/");
    const names = segments.map((segment, i) =>
      nameOf(segment, i === segments.length - 1 ? FILE_SUFFIX : DIR_SUFFIX),
    );
    if (names.some((name) => name.length > MAX_NAME_BYTES)) {
      throw new TenantryError(
        "invalid_storage_key",
        `storage key has a segment too long for the fs backend (${MAX_NAME_BYTES} bytes once escaped)`,
      );
    }
    return this.#resolve(names);
  }

  async put(fullKey: string, body: Uint8Array, _contentType?: string): Promise<void> {
    const file = this.#fileFor(fullKey);
    await io("put", () => this.#write(file, (tmp) => writeFile(tmp, body, { flag: "wx" })));
  }

  async putStream(
    fullKey: string,
    body: AsyncIterable<Uint8Array>,
    _options?: ObjectPutStreamOptions,
  ): Promise<void> {
    const file = this.#fileFor(fullKey);
    await io("put", () =>
      this.#write(file, (tmp) => pipeline(body, createWriteStream(tmp, { flags: "wx" }))),
    );
  }

  /** Writes a temp file, then renames it into place: readers see the old object or the new one. */
  async #write(file: string, writeTmp: (tmp: string) => Promise<void>): Promise<void> {
    const tmpDir = this.#resolve([TMP_DIR]);
    await mkdir(tmpDir, { recursive: true });
    // A linked .tmp would have the sweep below delete old files wherever it points.
    await this.#mustBeDirect(tmpDir);
    this.#swept ??= sweepStale(tmpDir, Date.now() - STALE_TMP_MS);
    await this.#swept;
    const tmp = path.join(tmpDir, randomBytes(12).toString("hex"));
    try {
      await writeTmp(tmp);
      // A concurrent delete may prune the (then empty) parent between mkdir and rename: retry.
      for (let attempt = 1; ; attempt++) {
        try {
          await this.#mkdirs(path.dirname(file));
          await this.#mustBeDirect(path.dirname(file));
          await rename(tmp, file);
          return;
        } catch (error) {
          if (errno(error) !== "ENOENT" || attempt >= 3) throw error;
        }
      }
    } catch (error) {
      await unlink(tmp).catch(() => {});
      throw error;
    }
  }

  /**
   * Makes `dir`, a directory under the root, and those on the way, one level at a time, never
   * through a link: `mkdir -p` follows a linked directory planted on the way and would create
   * directories where it points (outside the root, in another tenant's prefix) before the check
   * that refuses the write.
   */
  async #mkdirs(dir: string): Promise<void> {
    await mkdir(this.#root, { recursive: true }); // the root itself may be a link: a deployment's choice
    let current = this.#root;
    for (const name of path.relative(this.#root, dir).split(path.sep)) {
      if (name === "") continue;
      current = path.join(current, name);
      try {
        await mkdir(current);
      } catch (error) {
        if (errno(error) !== "EEXIST") throw error;
      }
      if (!(await lstat(current)).isDirectory()) {
        // The path is for the server's log (the cause); tool code sees "object store put failed".
        throw new Error(`${current} is not a directory (a link?): not written`);
      }
    }
  }

  /**
   * Whether `dir`, a directory under the root, is reached from the root through directories only:
   * its real path is the root's real path (the root itself may be a link, a deployment's choice)
   * plus the same names. A link loop is not; a missing directory throws ENOENT / ENOTDIR.
   */
  async #direct(dir: string): Promise<boolean> {
    try {
      const [real, realRoot] = await Promise.all([realpath(dir), realpath(this.#root)]);
      return real === path.join(realRoot, path.relative(this.#root, dir));
    } catch (error) {
      if (errno(error) === "ELOOP") return false;
      throw error;
    }
  }

  async #mustBeDirect(dir: string): Promise<void> {
    if (!(await this.#direct(dir))) {
      // The path is for the server's log (the cause); tool code sees "object store put failed".
      throw new Error(`${dir} leads outside the storage root through a symbolic link: not written`);
    }
  }

  /**
   * Opens the object at `file` for reading, or `undefined` when there is no object there (see
   * "Only what Tenantry wrote" above). Checked on the open handle, so what is read is what was
   * checked; the parent's real path is checked after the open, so a directory swapped for a link
   * before it is caught. Only an attacker swapping directories back and forth in the root while
   * this runs could get past that, and one with that access can already replace any object.
   */
  async #openObject(file: string): Promise<{ handle: FileHandle; info: Stats } | undefined> {
    let handle: FileHandle;
    try {
      handle = await open(file, OPEN_OBJECT);
    } catch (error) {
      if (NOT_AN_OBJECT.has(errno(error) ?? "")) return undefined;
      throw error;
    }
    let keep = false;
    try {
      const info = await handle.stat();
      if (!info.isFile() || !(await this.#direct(path.dirname(file)))) return undefined;
      keep = true;
      return { handle, info };
    } catch (error) {
      // Pruned by a concurrent delete between the open and the check: the object is gone.
      if (GONE.has(errno(error) ?? "")) return undefined;
      throw error;
    } finally {
      if (!keep) await handle.close();
    }
  }

  async get(fullKey: string, options: ObjectGetOptions = {}): Promise<Uint8Array | undefined> {
    const file = this.#fileFor(fullKey);
    return io("get", async () => {
      const opened = await this.#openObject(file);
      if (opened === undefined) return undefined;
      const { handle, info } = opened;
      try {
        if (options.maxBytes !== undefined) return await readBounded(handle, info.size, options.maxBytes);
        const buffer = await handle.readFile();
        return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
      } finally {
        await handle.close();
      }
    });
  }

  async getStream(fullKey: string): Promise<AsyncIterable<Uint8Array> | undefined> {
    const file = this.#fileFor(fullKey);
    const opened = await io("get", () => this.#openObject(file));
    // The stream closes the handle when it ends, fails or is destroyed.
    return opened && readFailures(opened.handle.createReadStream());
  }

  async delete(fullKey: string): Promise<boolean> {
    const file = this.#fileFor(fullKey);
    return io("delete", async () => {
      try {
        // unlink removes a link itself, never its target; a linked directory on the way, though,
        // would lead it outside the root.
        if (!(await this.#direct(path.dirname(file)))) return false;
        await unlink(file);
      } catch (error) {
        if (GONE.has(errno(error) ?? "")) return false;
        throw error;
      }
      await this.#pruneEmptyParents(path.dirname(file));
      return true;
    });
  }

  /** Removes now-empty directories up to the root, so deleted tenants leave no trace. */
  async #pruneEmptyParents(dir: string): Promise<void> {
    for (let current = dir; current !== this.#root && current.startsWith(this.#root + path.sep); ) {
      try {
        await rmdir(current);
      } catch {
        return; // not empty (or already gone): stop climbing
      }
      current = path.dirname(current);
    }
  }

  async list(fullPrefix: string, options: ObjectListOptions): Promise<ObjectListPage> {
    validateStoragePrefix(fullPrefix);
    const cursor = options.cursor === undefined ? undefined : validateStorageKey(options.cursor);
    const limit = clampListLimit(options.limit);
    // Start at the deepest directory the prefix names completely; filter the partial last segment.
    const whole = fullPrefix.split("/").slice(0, -1);
    const start = this.#resolve(whole.map((segment) => nameOf(segment, DIR_SUFFIX)));
    const keys: string[] = [];
    await io("list", () => this.#walk(start, whole.map((s) => `${s}/`).join(""), fullPrefix, keys));
    const after = keys
      .filter(
        (key) => key.startsWith(fullPrefix) && (cursor === undefined || compareStorageKeys(key, cursor) > 0),
      )
      .sort(compareStorageKeys);
    const page = after.slice(0, limit);
    return after.length > limit ? { keys: page, nextCursor: page.at(-1) as string } : { keys: page };
  }

  async #walk(dir: string, keyPrefix: string, fullPrefix: string, out: string[]): Promise<void> {
    let entries: Dirent[];
    try {
      // The walk never descends into a link (below), but the prefix names the directory it starts
      // in, and any directory on the way there may be one.
      if (!(await this.#direct(dir))) return;
      entries = await readdir(dir, { withFileTypes: true });
    } catch (error) {
      if (GONE.has(errno(error) ?? "")) return;
      throw error;
    }
    for (const entry of entries) {
      // Symbolic links are neither files nor directories here, so they are never followed.
      const suffix = entry.isDirectory() ? DIR_SUFFIX : entry.isFile() ? FILE_SUFFIX : undefined;
      if (suffix === undefined || !entry.name.endsWith(suffix)) continue;
      const segment = decodeSegment(entry.name.slice(0, -suffix.length));
      if (segment === undefined) continue;
      const key = keyPrefix + segment;
      if (suffix === FILE_SUFFIX) {
        out.push(key);
      } else if (`${key}/`.startsWith(fullPrefix) || fullPrefix.startsWith(`${key}/`)) {
        await this.#walk(path.join(dir, entry.name), `${key}/`, fullPrefix, out);
      }
    }
  }

  /**
   * Deletes every object under `fullPrefix`. A prefix that names a whole directory (`t/<key>/`, a
   * tenant's, at purge) is then removed with whatever else is in it: entries Tenantry did not write
   * (see "Only what Tenantry wrote" above) are not objects and are not counted, but a tenant whose
   * prefix kept a planted link or FIFO would not be gone. That directory and those on the way to it
   * must be real directories: if one is a link, nothing is removed through it, and the deletion
   * fails with `backend_unavailable` (the tenant's prefix is not gone; the link is for an operator).
   */
  async deletePrefix(fullPrefix: string): Promise<number> {
    let deleted = 0;
    let cursor: string | undefined;
    do {
      const page = await this.list(
        fullPrefix,
        cursor === undefined ? { limit: 1000 } : { cursor, limit: 1000 },
      );
      for (const key of page.keys) if (await this.delete(key)) deleted++;
      cursor = page.nextCursor;
    } while (cursor !== undefined);
    if (fullPrefix.endsWith("/")) {
      const segments = fullPrefix.slice(0, -1).split("/");
      const dir = this.#resolve(segments.map((segment) => nameOf(segment, DIR_SUFFIX)));
      await io("delete", () => this.#removeTree(dir));
    }
    return deleted;
  }

  /**
   * Removes the directory `dir` (under the root) and everything in it, never through a link: each
   * entry is unlinked as what it is (a link itself, never its target; a FIFO or socket without
   * being opened), and only real directories are descended into, each checked to be reached from
   * the root through directories before it is read. As in {@link delete}, only an attacker
   * swapping directories for links while this runs could get past the check.
   */
  async #removeTree(dir: string): Promise<void> {
    let info: Stats;
    try {
      info = await lstat(dir);
    } catch (error) {
      if (GONE.has(errno(error) ?? "")) return;
      throw error;
    }
    if (!info.isDirectory() || !(await this.#direct(dir))) {
      // The path is for the server's log (the cause); callers see "object store delete failed".
      throw new Error(`${dir} is not a directory reached through directories (a link?): not removed`);
    }
    const remove = async (current: string): Promise<void> => {
      let entries: Dirent[];
      try {
        if (!(await this.#direct(current))) {
          throw new Error(`${current} became a link while being removed: not removed`);
        }
        entries = await readdir(current, { withFileTypes: true });
      } catch (error) {
        if (GONE.has(errno(error) ?? "")) return;
        throw error;
      }
      for (const entry of entries) {
        const child = path.join(current, entry.name);
        try {
          // A Dirent's type is the entry's own (lstat's): a link to a directory is not a directory.
          if (entry.isDirectory()) await remove(child);
          else await unlink(child);
        } catch (error) {
          if (!GONE.has(errno(error) ?? "")) throw error;
        }
      }
      try {
        await rmdir(current);
      } catch (error) {
        if (!GONE.has(errno(error) ?? "")) throw error;
      }
    };
    await remove(dir);
    await this.#pruneEmptyParents(path.dirname(dir));
  }
}

/**
 * Reads an open file whole, but never more than `maxBytes`: its `size` (from the handle: the file
 * opened, even if it is renamed over meanwhile) is checked first, and the read stops one byte past
 * the limit, for a file appended to after that check.
 */
async function readBounded(handle: FileHandle, size: number, maxBytes: number): Promise<Uint8Array> {
  if (size > maxBytes) throw objectTooLarge(maxBytes, size);
  // Zeroed memory of its own (not Buffer's shared pool): tool code can reach `.buffer`.
  let buffer = new Uint8Array(Math.min(Math.max(size + 1, 16 * 1024), maxBytes + 1));
  let length = 0;
  for (;;) {
    if (length === buffer.byteLength) {
      if (length > maxBytes) throw objectTooLarge(maxBytes);
      const grown = new Uint8Array(Math.min(buffer.byteLength * 2, maxBytes + 1));
      grown.set(buffer);
      buffer = grown;
    }
    const { bytesRead } = await handle.read(buffer, length, buffer.byteLength - length, length);
    if (bytesRead === 0) return buffer.subarray(0, length);
    length += bytesRead;
  }
}

/** Removes the temp files in `tmpDir` last modified before `before` (ms); best effort, never throws. */
async function sweepStale(tmpDir: string, before: number): Promise<void> {
  const names = await readdir(tmpDir).catch(() => [] as string[]);
  for (const name of names) {
    const file = path.join(tmpDir, name);
    const info = await lstat(file).catch(() => undefined);
    if (info?.isFile() && info.mtimeMs < before) await unlink(file).catch(() => {});
  }
}
