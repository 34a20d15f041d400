import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { quoteIdent, schemaNameForKey, storagePrefixForKey } from "../../src/isolation/names.js";
import { encodeTenantId, schemaNameForTenantId, storagePrefixForTenantId } from "../support/tenant-names.js";

const validId = fc.stringMatching(/^[A-Za-z0-9._:-]{1,64}$/).filter((id) => id !== "." && id !== "..");
const bytes = (s: string) => Buffer.byteLength(s, "utf8");
const ID_63 = `org_${"A".repeat(59)}`;
const ID_64 = `${ID_63}b`;

describe("schema names from tenant ids", () => {
  const tricky = [
    "tenant-a",
    "tenanta",
    "tenant_a",
    "tenant.a",
    "tenant:a",
    "org_AbC",
    "org_abc",
    ID_63,
    ID_64,
  ];

  it("gives distinct, well-formed, at most 63-byte names to ids the seed made collide", () => {
    const names = tricky.map(schemaNameForTenantId);
    expect(new Set(names).size).toBe(tricky.length);
    for (const name of names) {
      expect(name).toMatch(/^[a-z0-9_]+$/);
      expect(bytes(name)).toBeLessThanOrEqual(63);
    }
    // The two long ids differ only in their 64th character: truncation would have merged them.
    expect(schemaNameForTenantId(ID_63)).not.toBe(schemaNameForTenantId(ID_64));
    expect(schemaNameForTenantId(ID_64)).toMatch(/^tenant_h_[0-9a-f]{40}$/);
    expect(schemaNameForTenantId("acme")).toBe("tenant_i_acme");
  });

  it("encodes case and punctuation instead of dropping them", () => {
    expect(encodeTenantId("org_AbC")).toBe("org_5f_41b_43");
    expect(encodeTenantId("tenant-a")).toBe("tenant_2da");
    expect(new Set(["tenant-a", "tenanta", "tenant_a"].map(encodeTenantId)).size).toBe(3);
  });

  it("rejects invalid ids rather than filtering them", () => {
    for (const id of ["", ".", "..", "a/b", "a b", "ä", "x".repeat(65)]) {
      expect(() => schemaNameForTenantId(id)).toThrow(expect.objectContaining({ code: "invalid_tenant_id" }));
      expect(() => encodeTenantId(id)).toThrow(expect.objectContaining({ code: "invalid_tenant_id" }));
    }
  });

  it("is injective and bounded over random valid ids (property)", () => {
    // A tiny alphabet makes near-collisions (case, `-` vs `_`, one char longer) frequent, and
    // long ids exercise the hashed form.
    const nearby = fc.stringMatching(/^[aA_.:1-]{1,64}$/).filter((id) => id !== "." && id !== "..");
    fc.assert(
      fc.property(fc.uniqueArray(fc.oneof(validId, nearby), { minLength: 2, maxLength: 40 }), (ids) => {
        const names = ids.map(schemaNameForTenantId);
        expect(new Set(names).size).toBe(ids.length);
        expect(new Set(ids.map(encodeTenantId)).size).toBe(ids.length);
        for (const name of names) {
          expect(name).toMatch(/^[a-z0-9_]+$/);
          expect(bytes(name)).toBeLessThanOrEqual(63);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("keeps the id, hashed and key families disjoint", () => {
    // `h-` + 38 hex digits would encode to `h_2d…`, the hashed shape, under a plain `tenant_` prefix.
    const lookalike = `h-${"0".repeat(38)}`;
    expect(schemaNameForTenantId(lookalike)).toMatch(/^tenant_i_h_2d/);
    fc.assert(
      fc.property(validId, fc.stringMatching(/^[a-z0-9]{1,40}$/), (id, key) => {
        expect(schemaNameForTenantId(id)).not.toBe(schemaNameForKey(key));
        expect(storagePrefixForTenantId(id)).not.toBe(storagePrefixForKey(key));
      }),
    );
  });
});

describe("names from registry keys", () => {
  it("maps keys to schemas and prefixes", () => {
    expect(schemaNameForKey("1a")).toBe("tenant_1a");
    expect(storagePrefixForKey("1a")).toBe("t/1a/");
    expect(bytes(schemaNameForKey("z".repeat(40)))).toBeLessThanOrEqual(63);
  });

  it("gives distinct keys distinct schemas and prefixes, none nested in another (property)", () => {
    const key = fc.stringMatching(/^[a-z0-9]{1,40}$/);
    fc.assert(
      fc.property(fc.uniqueArray(key, { minLength: 2, maxLength: 40 }), (keys) => {
        const schemas = keys.map(schemaNameForKey);
        expect(new Set(schemas).size).toBe(keys.length);
        for (const name of schemas) expect(bytes(name)).toBeLessThanOrEqual(47);
        const prefixes = keys.map(storagePrefixForKey);
        for (const a of prefixes) {
          for (const b of prefixes) if (a !== b) expect(b.startsWith(a)).toBe(false);
        }
      }),
      { numRuns: 300 },
    );
    // What a prefix without the trailing `/` gets wrong: `t/1` would hold `t/10`'s objects.
    expect(storagePrefixForKey("10").startsWith(storagePrefixForKey("1"))).toBe(false);
  });

  it("rejects keys outside [a-z0-9]{1,40}", () => {
    for (const key of ["", "A", "a/b", "a_b", "..", "z".repeat(41)]) {
      expect(() => storagePrefixForKey(key)).toThrow(expect.objectContaining({ code: "invalid_argument" }));
      expect(() => schemaNameForKey(key)).toThrow(expect.objectContaining({ code: "invalid_argument" }));
    }
  });
});

describe("quoteIdent", () => {
  it("doubles quotes and refuses what PostgreSQL would alter", () => {
    expect(quoteIdent("tenant_1")).toBe('"tenant_1"');
    expect(quoteIdent('a"b')).toBe('"a""b"');
    for (const bad of ["", "a\0b", "x".repeat(64)]) {
      expect(() => quoteIdent(bad)).toThrow(expect.objectContaining({ code: "invalid_argument" }));
    }
  });
});
