import { isTenantryError, TenantryError } from "../../errors.js";

/**
 * A raw object backend (local files, S3). It knows nothing of tenants: keys here are *full* keys,
 * tenant prefix included. Tool code never sees an ObjectStore, only a {@link TenantStorage} bound
 * to one prefix. Implementations validate every key again (defence in depth).
 */
export interface ObjectStore {
  /** Stores `body` under `fullKey`, replacing any previous object; readers see old or new, never a mix. */
  put(fullKey: string, body: Uint8Array, contentType?: string): Promise<void>;
  /**
   * The object's bytes, or `undefined` when there is none. With `maxBytes`, an object larger than
   * that is refused with `payload_too_large` ({@link objectTooLarge}) without being read into
   * memory: objects can reach the backend by other means than Tenantry's capped `put`.
   */
  get(fullKey: string, options?: ObjectGetOptions): Promise<Uint8Array | undefined>;
  /**
   * Optional: the object's bytes as a stream, or `undefined` when there is none, so that a caller
   * copying objects of any size (archiving) holds one chunk at a time. The caller reads it to the
   * end or stops early (`break` / `return()` on the iterator), which releases it. Without it,
   * callers fall back to {@link get}, bounded by `max_object_bytes`. A read that fails part-way
   * fails the iteration with `backend_unavailable` (see {@link readFailures}).
   */
  getStream?(fullKey: string): Promise<AsyncIterable<Uint8Array> | undefined>;
  /**
   * Optional: stores the bytes `body` yields as {@link put} does, holding one chunk at a time
   * (restoring archives). Without it, callers read the body whole and call {@link put}.
   */
  putStream?(
    fullKey: string,
    body: AsyncIterable<Uint8Array>,
    options?: ObjectPutStreamOptions,
  ): Promise<void>;
  /** Deletes the object; `true` when it existed. */
  delete(fullKey: string): Promise<boolean>;
  /**
   * Keys starting with `fullPrefix`, in UTF-8 byte order, strictly after `cursor` when given, at
   * most `limit` (1-1000). `nextCursor`, set while more keys may follow, is the last key returned.
   */
  list(fullPrefix: string, options: ObjectListOptions): Promise<ObjectListPage>;
  /**
   * Deletes every object under `fullPrefix` (used by purge and restore); returns how many. A prefix
   * ending in `/` is a tenant's: a backend with directories (fs) removes it whole, with anything
   * planted in it that is not an object.
   */
  deletePrefix(fullPrefix: string): Promise<number>;
  /** Releases connections; the store is unusable afterwards. */
  close?(): Promise<void>;
}

/**
 * `body` as it is, but a read that fails part-way fails with `backend_unavailable`, the backend's
 * error as `cause`: its message (a server path, an endpoint) is not for the caller. Stopping early
 * is passed on to `body`, which releases it.
 */
export async function* readFailures(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  try {
    yield* body;
  } catch (error) {
    if (isTenantryError(error)) throw error;
    throw new TenantryError("backend_unavailable", "object store read failed", { cause: error });
  }
}

export interface ObjectGetOptions {
  /** Largest object to read, in bytes (`[storage] max_object_bytes`). */
  maxBytes?: number;
}

export interface ObjectPutStreamOptions {
  /** The body's length in bytes, when known (S3 needs it to send a stream as one PUT). */
  size?: number;
  /** The body's SHA-256 (hex), when known: a backend that can (S3) has the server verify it. */
  sha256?: string;
  contentType?: string;
}

/**
 * The error for an object over the read limit. It names the limit and, when known, the size;
 * never the key or a server path.
 */
export function objectTooLarge(maxBytes: number, size?: number): TenantryError {
  const what = size === undefined ? "object is larger than" : `object of ${size} bytes exceeds`;
  return new TenantryError("payload_too_large", `${what} max_object_bytes (${maxBytes}): not read`, {
    details: { maxObjectBytes: maxBytes },
  });
}

export interface ObjectListOptions {
  /** A full key previously returned as `nextCursor`. */
  cursor?: string;
  limit: number;
}

export interface ObjectListPage {
  keys: string[];
  nextCursor?: string;
}

/** Largest page a backend returns (S3's own maximum). */
export const MAX_LIST_LIMIT = 1000;

/** Clamps a requested page size into 1..{@link MAX_LIST_LIMIT}. */
export function clampListLimit(limit: number): number {
  return Math.min(Math.max(1, Math.trunc(limit) || 1), MAX_LIST_LIMIT);
}
