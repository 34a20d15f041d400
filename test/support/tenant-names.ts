import { createHash } from "node:crypto";
import { MAX_IDENTIFIER_BYTES } from "../../src/isolation/names.js";
import { assertTenantId } from "../../src/tenancy/tenant-id.js";

/*
 * Injective names derived from tenant ids, for tests only: Tenantry itself names schemas and
 * prefixes from registry keys (src/isolation/names.ts). Tests use these to give many look-alike
 * ids their own storage prefixes without a registry, and to show the seed's id-derived names
 * colliding where these do not. The three schema-name families are pairwise disjoint:
 * - `tenant_<key>`      key is `[a-z0-9]{1,40}`: never contains `_` after `tenant_`;
 * - `tenant_i_<enc>`    enc is {@link encodeTenantId}: starts with `i_`;
 * - `tenant_h_<40 hex>` for ids whose direct form would exceed 63 bytes: starts with `h_`.
 */

const HASH_HEX_CHARS = 40;

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
