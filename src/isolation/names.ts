import { TenantryError } from "../errors.js";

/**
 * Names of per-tenant resources (PostgreSQL schemas, object-storage prefixes), derived from the
 * registry's immutable tenant key, never from the tenant id. The seed derived names from ids by
 * dropping or lower-casing characters, so `tenant-a`/`tenanta` and `org_AbC`/`org_abc` collided,
 * and long ids collided after PostgreSQL's silent 63-byte truncation (seed defects 3 and 4). A key
 * is unique in the registry and matches `[a-z0-9]{1,40}`, so these mappings are injective, a
 * schema name is at most 47 bytes, and no storage prefix is a prefix of another.
 */

/** Registry keys: short and lower-case, e.g. a hex or base36 serial. */
export const TENANT_KEY_PATTERN = /^[a-z0-9]{1,40}$/;

/** PostgreSQL keeps at most NAMEDATALEN - 1 = 63 bytes of an identifier and silently drops the rest. */
export const MAX_IDENTIFIER_BYTES = 63;

function assertTenantKey(key: unknown): string {
  if (typeof key !== "string" || !TENANT_KEY_PATTERN.test(key)) {
    const shown = typeof key === "string" ? JSON.stringify(key.slice(0, 60)) : typeof key;
    throw new TenantryError("invalid_argument", `invalid tenant key ${shown}: expected 1-40 of [a-z0-9]`);
  }
  return key;
}

/** The schema of the tenant with registry key `key`: `tenant_<key>` (at most 47 bytes). */
export function schemaNameForKey(key: string): string {
  return `tenant_${assertTenantKey(key)}`;
}

/**
 * The object-storage prefix of the tenant with registry key `key`: `t/<key>/`.
 * A key never contains `/`, so `t/1/` is not a prefix of `t/10/`: no tenant nests in another.
 */
export function storagePrefixForKey(key: string): string {
  return `t/${assertTenantKey(key)}/`;
}

/**
 * Quotes an identifier for SQL (`"` doubled). Refuses what PostgreSQL would not keep intact: an
 * empty name, NUL, or more than 63 bytes (silent truncation is how long tenant ids collided).
 *
 * @example client.query(`SET LOCAL search_path TO ${quoteIdent(schemaNameForKey(key))}`)
 */
export function quoteIdent(name: string): string {
  if (typeof name !== "string" || name === "" || name.includes("\0")) {
    throw new TenantryError("invalid_argument", "an SQL identifier must be a non-empty string without NUL");
  }
  if (Buffer.byteLength(name, "utf8") > MAX_IDENTIFIER_BYTES) {
    throw new TenantryError("invalid_argument", `SQL identifier longer than ${MAX_IDENTIFIER_BYTES} bytes`);
  }
  return `"${name.replaceAll('"', '""')}"`;
}
