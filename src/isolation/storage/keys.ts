import { TenantryError } from "../../errors.js";

/** S3's own limit on a key, in UTF-8 bytes; we apply it to every backend so they agree. */
export const MAX_STORAGE_KEY_BYTES = 1024;

export interface StorageKeyOptions {
  /** Accept `""` (a list prefix meaning "everything"). */
  allowEmpty?: boolean;
  /** Accept a trailing `/` (list prefixes such as `reports/`); object keys never end in `/`. */
  allowTrailingSlash?: boolean;
}

// \p{Cc}: U+0000-U+001F, U+007F and the C1 controls; \p{Cs}: a lone surrogate, which UTF-8
// encoding would turn into U+FFFD and so alias another key.
const CONTROL_OR_LONE_SURROGATE = /[\p{Cc}\p{Cs}]/u;

function reject(key: string, reason: string): never {
  const shown = JSON.stringify(key.length > 60 ? `${key.slice(0, 60)}…` : key);
  throw new TenantryError("invalid_storage_key", `storage key ${shown} ${reason}`);
}

/**
 * Validates an object key (or, with options, a list prefix) and returns it unchanged.
 *
 * Rejects with `invalid_storage_key`: a non-string; `""` unless `allowEmpty`; more than 1024 UTF-8
 * bytes; a leading `/`; a backslash; control characters (NUL included) or lone surrogates; a `.`,
 * `..` or empty (`//`) segment; a trailing `/` unless `allowTrailingSlash`. Keys are never
 * normalised: a key that needs normalising is refused, so one object has exactly one name.
 *
 * @example validateStorageKey("reports/2024.pdf"); validateStoragePrefix("reports/");
 */
export function validateStorageKey(key: unknown, options: StorageKeyOptions = {}): string {
  if (typeof key !== "string") {
    throw new TenantryError("invalid_storage_key", `storage key must be a string, got ${typeof key}`);
  }
  if (key === "") {
    if (options.allowEmpty) return key;
    reject(key, "is empty");
  }
  if (Buffer.byteLength(key, "utf8") > MAX_STORAGE_KEY_BYTES) {
    reject(key, `is longer than ${MAX_STORAGE_KEY_BYTES} bytes in UTF-8`);
  }
  if (CONTROL_OR_LONE_SURROGATE.test(key)) reject(key, "contains a control character or a lone surrogate");
  if (key.includes("\\")) reject(key, "contains a backslash");
  if (key.startsWith("/")) reject(key, "starts with /");
  const trailingSlash = key.endsWith("/");
  if (trailingSlash && !options.allowTrailingSlash) reject(key, "ends with /");
  const segments = (trailingSlash ? key.slice(0, -1) : key).split("/");
  for (const segment of segments) {
    if (segment === "." || segment === "..") reject(key, `has a "${segment}" path segment`);
    if (segment === "") reject(key, "has an empty path segment (//)");
  }
  return key;
}

/** Validates a list prefix: the rules of {@link validateStorageKey}, but `""` and a trailing `/` pass. */
export function validateStoragePrefix(prefix: unknown): string {
  return validateStorageKey(prefix, { allowEmpty: true, allowTrailingSlash: true });
}

/** Orders keys by their UTF-8 bytes, as S3 does, so every backend pages in the same order. */
export function compareStorageKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}
