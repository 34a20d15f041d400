import { createHash } from "node:crypto";
import { TenantryError } from "../errors.js";
import { assertTenantId } from "../tenancy/tenant-id.js";

/**
 * Names of per-tenant resources (PostgreSQL schemas, object-storage prefixes).
 *
 * Every mapping here is injective: two different tenants never get the same name, and no storage
 * prefix is a prefix of another. The seed derived names by dropping or lower-casing characters,
 * so `tenant-a`/`tenanta` and `org_AbC`/`org_abc` collided, and long ids collided after
 * PostgreSQL's silent 63-byte truncation (seed defects 3 and 4).
 *
 * Preferred: derive from the registry's immutable key (`schemaNameForKey`, `storagePrefixForKey`).
 * The tenant-id mappings exist for deployments without a registry key. The three schema-name
 * families are pairwise disjoint, so a database may even hold both kinds during a migration:
 * - `tenant_<key>`      key is `[a-z0-9]{1,40}`: never contains `_` after `tenant_`;
 * - `tenant_i_<enc>`    enc is {@link encodeTenantId}: starts with `i_`;
 * - `tenant_h_<40 hex>` for ids whose direct form would exceed 63 bytes: starts with `h_`.
 */

/** Registry keys: short and lower-case, e.g. a hex or base36 serial. */
export const TENANT_KEY_PATTERN = /^[a-z0-9]{1,40}$/;

/** PostgreSQL keeps at most NAMEDATALEN - 1 = 63 bytes of an identifier and silently drops the rest. */
export const MAX_IDENTIFIER_BYTES = 63;

const HASH_HEX_CHARS = 40;

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
 * Encodes a valid tenant id into `[a-z0-9_]`: `[a-z0-9]` stay, every other character (upper-case
 * letters included) becomes `_` plus two lower-case hex digits of its code (`A` → `_41`).
 * Injective because it is a prefix code: a literal `_` never survives, and `_` is always followed
 * by exactly two hex digits, so the output decodes in one way only.
 *
 * @example encodeTenantId("org_AbC") // "org_5f_41b_43"
 * @throws TenantryError `invalid_tenant_id` when `id` is not a valid tenant id.
 */
export function encodeTenantId(id: string): string {
  assertTenantId(id);
  let out = "";
  for (const ch of id) {
    // Tenant ids are ASCII, so one char is one code unit below 0x80: two hex digits suffice.
    out += /[a-z0-9]/.test(ch) ? ch : `_${ch.charCodeAt(0).toString(16).padStart(2, "0")}`;
  }
  return out;
}

/**
 * The schema of tenant `id` when no registry key is available; always at most 63 bytes.
 *
 * `tenant_i_<encodeTenantId(id)>` when that fits, else `tenant_h_` + the first 40 hex digits of
 * sha256(id). Collisions: the direct form is injective; direct and hashed forms differ at `i_`/`h_`;
 * two hashed names collide only if two ids share a 160-bit sha256 prefix (about 2^80 work to
 * find any pair). A plain `tenant_<enc>` would not do: `h-` followed by 38 hex digits encodes to
 * `h_2d…`, the same shape as a hash, and a matching long id is found in a few tries.
 */
export function schemaNameForTenantId(id: string): string {
  const direct = `tenant_i_${encodeTenantId(id)}`;
  if (direct.length <= MAX_IDENTIFIER_BYTES) return direct;
  const digest = createHash("sha256").update(id, "utf8").digest("hex");
  return `tenant_h_${digest.slice(0, HASH_HEX_CHARS)}`;
}

/**
 * The object-storage prefix of tenant `id` when no registry key is available: `i/<enc>/`.
 * Disjoint from the `t/<key>/` family, and like it never nested: the encoding contains no `/`.
 */
export function storagePrefixForTenantId(id: string): string {
  return `i/${encodeTenantId(id)}/`;
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
