import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { storageSchema } from "../../src/config/schema.js";
import { isTenantryError } from "../../src/errors.js";
import { createObjectStore, type ObjectStore, TenantStorage } from "../../src/isolation/storage/index.js";
import { compareStorageKeys } from "../../src/isolation/storage/keys.js";
import { assertTenantId } from "../../src/tenancy/tenant-id.js";
import { s3StorageTable, startS3, type TestS3 } from "../support/s3.js";
import { listAll } from "../support/storage.js";
import { storagePrefixForTenantId } from "../support/tenant-names.js";

/*
 * Model-based: random put/get/delete/list by random tenants, checked after every step against a
 * Map per tenant. Ids include look-alikes (`1`/`10`, `...`/`.a`, case, punctuation) and hostile ids
 * that admission must refuse; keys and prefixes include traversal attempts. Values carry the
 * writer's id, so reading another tenant's object can never match the model by accident.
 */
const VALID_IDS = ["a", "A", "a.b", "a:b", "a-b", "a_b", "...", ".a", "1", "10", "org_AbC", "org_abc"];
const HOSTILE_IDS = ["a/b", "../a", "", ".", "..", "a b", "x".repeat(65), "a\u0000", "a\\b"];
const VALID_KEYS = ["k", "k/x", "k/x/y", "K", "1", "10", "0/x", "é", "a b", "..k", "b/secret"];
// s3rver lists `k/x` before `k` (real S3 sorts `k` first), so pages by StartAfter would skip `k`:
// against s3rver, no key is also the "directory" of another.
const VALID_KEYS_S3 = ["k", "kx/y", "k0/x/y", "K", "1", "10", "0/x", "é", "a b", "..k", "b/secret"];
const HOSTILE_KEYS = ["../k", "k/../../x", "/k", "k\\x", "k\u0000", ".", "..", "k/", "", "x".repeat(1025)];
const VALID_PREFIXES = ["", "k", "k/", "1", "0/", "b/", "é"];
const HOSTILE_PREFIXES = ["../", "/", "k/../", "k\u0000", "./"];

const tagged = (valid: string[], hostile: string[]) =>
  fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...valid).map((value) => ({ value, hostile: false })) },
    { weight: 1, arbitrary: fc.constantFrom(...hostile).map((value) => ({ value, hostile: true })) },
  );
const opFor = (tenant: fc.Arbitrary<string>, key = tagged(VALID_KEYS, HOSTILE_KEYS)) =>
  fc.oneof(
    fc.record({ kind: fc.constant("put" as const), tenant, key }),
    fc.record({ kind: fc.constant("get" as const), tenant, key }),
    fc.record({ kind: fc.constant("delete" as const), tenant, key }),
    fc.record({
      kind: fc.constant("list" as const),
      tenant,
      prefix: tagged(VALID_PREFIXES, HOSTILE_PREFIXES),
      limit: fc.integer({ min: 1, max: 4 }),
    }),
  );
// A few tenants per run, so the same tenants write, read and list each other's keys' neighbours.
const scenario = (maxLength: number, validKeys = VALID_KEYS) =>
  fc.shuffledSubarray(VALID_IDS, { minLength: 2, maxLength: 4 }).chain((pool) => {
    const tenant = fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom(...pool) },
      fc.constantFrom(...HOSTILE_IDS),
    );
    return fc.array(opFor(tenant, tagged(validKeys, HOSTILE_KEYS)), { minLength: 5, maxLength, size: "max" });
  });
type Op = ReturnType<typeof opFor> extends fc.Arbitrary<infer T> ? T : never;

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  await expect(promise).rejects.toSatisfy((e: unknown) => isTenantryError(e) && e.code === code);
}

async function check(store: ObjectStore, ops: Op[]): Promise<void> {
  const model = new Map<string, Map<string, string>>();
  let serial = 0;
  for (const o of ops) {
    let id: string;
    try {
      id = assertTenantId(o.tenant);
    } catch (error) {
      expect(HOSTILE_IDS).toContain(o.tenant); // admission refused it: it never gets storage
      expect(isTenantryError(error, "invalid_tenant_id")).toBe(true);
      continue;
    }
    const storage = new TenantStorage(store, storagePrefixForTenantId(id));
    const mine = model.get(id) ?? new Map<string, string>();
    model.set(id, mine);
    if (o.kind === "list") {
      if (o.prefix.hostile) {
        await expectCode(storage.list(o.prefix.value, { limit: o.limit }), "invalid_storage_key");
        continue;
      }
      const expected = [...mine.keys()].filter((k) => k.startsWith(o.prefix.value)).sort(compareStorageKeys);
      expect(await listAll(storage, o.prefix.value, o.limit)).toEqual(expected);
      continue;
    }
    const k = o.key.value;
    if (o.key.hostile) {
      const attempt =
        o.kind === "put" ? storage.put(k, "x") : o.kind === "get" ? storage.get(k) : storage.delete(k);
      await expectCode(attempt, "invalid_storage_key");
    } else if (o.kind === "put") {
      const value = `${id}#${serial++}`;
      await storage.put(k, value);
      mine.set(k, value);
    } else if (o.kind === "get") {
      expect(await storage.getText(k)).toBe(mine.get(k));
    } else {
      expect(await storage.delete(k)).toBe(mine.delete(k));
    }
  }
  // Globally: the backend holds exactly the model's objects, each under its owner's prefix.
  const expected = [...model].flatMap(([id, keys]) =>
    [...keys.keys()].map((k) => storagePrefixForTenantId(id) + k),
  );
  const raw = await store.list("", { limit: 1000 });
  expect(raw.keys.sort(compareStorageKeys)).toEqual(expected.sort(compareStorageKeys));
}

describe("tenant storage against a model (property)", () => {
  let s3: TestS3;
  let s3Store: ObjectStore;
  beforeAll(async () => {
    s3 = await startS3();
    s3Store = createObjectStore(storageSchema.parse(s3StorageTable(s3)));
  });
  afterAll(async () => {
    await s3Store?.close?.();
    await s3?.close();
  });

  it("on fs: no sequence of operations observes another tenant's data", async () => {
    await fc.assert(
      fc.asyncProperty(scenario(40), async (ops) => {
        const base = await mkdtemp(join(tmpdir(), "tenantry-fsprop-"));
        try {
          await check(createObjectStore(storageSchema.parse({ backend: "fs", root: join(base, "o") })), ops);
        } finally {
          await rm(base, { recursive: true, force: true });
        }
      }),
      { numRuns: 100 },
    );
  });

  it("on s3: no sequence of operations observes another tenant's data", async () => {
    await fc.assert(
      fc.asyncProperty(scenario(30, VALID_KEYS_S3), async (ops) => {
        await s3Store.deletePrefix("");
        await check(s3Store, ops);
      }),
      { numRuns: 40 },
    );
  }, 120_000);
});
