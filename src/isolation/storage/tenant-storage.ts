import { TenantryError } from "../../errors.js";
import { storagePrefixForKey } from "../names.js";
import { MAX_STORAGE_KEY_BYTES, validateStorageKey, validateStoragePrefix } from "./keys.js";
import { MAX_LIST_LIMIT, type ObjectStore, objectTooLarge } from "./object-store.js";

/** pino-compatible: only `warn` is used, for anomalies a backend should never produce. */
export interface StorageLogger {
  warn(details: Record<string, unknown>, message: string): void;
}

export interface TenantStorageOptions {
  /** Largest object `put` writes and `get` reads, in bytes (`[storage] max_object_bytes`); default 10 MiB. */
  maxObjectBytes?: number;
  log?: StorageLogger;
}

export interface TenantListOptions {
  /** `nextCursor` of the previous page. */
  cursor?: string;
  /** Page size, 1-1000; default 100. */
  limit?: number;
}

export interface TenantListResult {
  /** Tenant-relative keys, in UTF-8 byte order. */
  keys: string[];
  /** Present while more keys may follow. */
  nextCursor?: string;
}

const DEFAULT_MAX_OBJECT_BYTES = 10 * 1024 * 1024;
const CONTENT_TYPE = /^[\x20-\x7e]{1,255}$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const warnOnStderr: StorageLogger = {
  warn: (details, message) => process.emitWarning(`${message} ${JSON.stringify(details)}`, "TenantryStorage"),
};

/**
 * `ctx.storage`: object storage bound at creation to one tenant's prefix. No method takes a
 * tenant, and the prefix and backend are private, so tool code can neither name nor reach another
 * tenant's objects. Keys are tenant-relative and validated ({@link validateStorageKey}); the full
 * key (prefix + key) must also fit S3's 1024-byte limit.
 *
 * @example
 * const storage = TenantStorage.forKey(store, tenant.key, { maxObjectBytes: config.storage.max_object_bytes });
 * await storage.put("notes/today.txt", "hello", { contentType: "text/plain" });
 * const { keys, nextCursor } = await storage.list("notes/");
 */
export class TenantStorage {
  readonly #store: ObjectStore;
  readonly #prefix: string;
  readonly #maxObjectBytes: number;
  readonly #log: StorageLogger;
  #ended = false;

  /** `prefix` must be a tenant's prefix ending in `/`, normally from `storagePrefixForKey`. */
  constructor(store: ObjectStore, prefix: string, options: TenantStorageOptions = {}) {
    if (prefix === "" || !prefix.endsWith("/")) {
      throw new TenantryError("invalid_argument", "a tenant storage prefix must be non-empty and end with /");
    }
    validateStoragePrefix(prefix);
    const max = options.maxObjectBytes ?? DEFAULT_MAX_OBJECT_BYTES;
    if (!Number.isSafeInteger(max) || max < 0) {
      throw new TenantryError("invalid_argument", "maxObjectBytes must be a non-negative integer");
    }
    this.#store = store;
    this.#prefix = prefix;
    this.#maxObjectBytes = max;
    this.#log = options.log ?? warnOnStderr;
  }

  /** Storage for the tenant with registry key `tenantKey` (prefix `t/<key>/`). */
  static forKey(store: ObjectStore, tenantKey: string, options?: TenantStorageOptions): TenantStorage {
    return new TenantStorage(store, storagePrefixForKey(tenantKey), options);
  }

  /**
   * Refuses every later operation: a tool call's storage ends with the call, so a tool that runs
   * on after its call ended (past `tool_timeout_ms`) writes nothing more.
   */
  end(): void {
    this.#ended = true;
  }

  #live(): void {
    if (this.#ended) throw new TenantryError("internal", "ctx.storage used after the tool call ended");
  }

  #fullKey(key: string): string {
    this.#live();
    const full = this.#prefix + validateStorageKey(key);
    if (Buffer.byteLength(full, "utf8") > MAX_STORAGE_KEY_BYTES) {
      throw new TenantryError(
        "invalid_storage_key",
        `storage key is too long: with the tenant prefix it exceeds ${MAX_STORAGE_KEY_BYTES} bytes`,
      );
    }
    return full;
  }

  /**
   * The object's bytes, or `undefined` when there is none. An object over `maxObjectBytes` (put
   * in the bucket or directory by other means than this class) is refused with
   * `payload_too_large`, without being read into memory.
   */
  async get(key: string): Promise<Uint8Array | undefined> {
    const max = this.#maxObjectBytes;
    const body = await this.#store.get(this.#fullKey(key), { maxBytes: max });
    // A custom ObjectStore may ignore maxBytes: the tool still never gets more than the limit.
    if (body !== undefined && body.byteLength > max) throw objectTooLarge(max, body.byteLength);
    return body;
  }

  /** The object decoded as UTF-8 (invalid bytes become U+FFFD), or `undefined`. */
  async getText(key: string): Promise<string | undefined> {
    const body = await this.get(key);
    return body === undefined ? undefined : decoder.decode(body);
  }

  /** Stores `body` (a string is written as UTF-8); `payload_too_large` beyond `maxObjectBytes`. */
  async put(key: string, body: string | Uint8Array, options: { contentType?: string } = {}): Promise<void> {
    const full = this.#fullKey(key);
    if (typeof body !== "string" && !(body instanceof Uint8Array)) {
      throw new TenantryError("invalid_argument", "an object body must be a string or a Uint8Array");
    }
    const bytes = typeof body === "string" ? encoder.encode(body) : body;
    if (bytes.byteLength > this.#maxObjectBytes) {
      throw new TenantryError(
        "payload_too_large",
        `object of ${bytes.byteLength} bytes exceeds max_object_bytes (${this.#maxObjectBytes})`,
        { details: { maxObjectBytes: this.#maxObjectBytes } },
      );
    }
    const { contentType } = options;
    if (contentType !== undefined && !CONTENT_TYPE.test(contentType)) {
      throw new TenantryError("invalid_argument", "contentType must be 1-255 printable ASCII characters");
    }
    await this.#store.put(full, bytes, contentType);
  }

  /** Deletes the object; `true` when it existed. */
  async delete(key: string): Promise<boolean> {
    return this.#store.delete(this.#fullKey(key));
  }

  /** Tenant-relative keys starting with `prefix` (`""` = all), one page at a time. */
  async list(prefix = "", options: TenantListOptions = {}): Promise<TenantListResult> {
    this.#live();
    validateStoragePrefix(prefix);
    const limit = options.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
      throw new TenantryError("invalid_argument", `limit must be an integer from 1 to ${MAX_LIST_LIMIT}`);
    }
    const fullPrefix = this.#prefix + prefix;
    const cursor = options.cursor === undefined ? undefined : this.#fullKey(options.cursor);
    const page = await this.#store.list(fullPrefix, cursor === undefined ? { limit } : { cursor, limit });
    const keys: string[] = [];
    for (const full of page.keys) {
      // The backend filtered by prefix already; a key outside it is a backend bug, never shown.
      if (full.startsWith(fullPrefix)) {
        keys.push(full.slice(this.#prefix.length));
      } else {
        this.#log.warn({ returned: full.slice(0, 120) }, "object store listed a key outside the prefix");
      }
    }
    if (page.nextCursor === undefined) return { keys };
    if (!page.nextCursor.startsWith(this.#prefix)) {
      this.#log.warn(
        { returned: page.nextCursor.slice(0, 120) },
        "object store returned a cursor outside the prefix",
      );
      return { keys };
    }
    return { keys, nextCursor: page.nextCursor.slice(this.#prefix.length) };
  }
}
