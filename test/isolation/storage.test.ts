import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { storageSchema } from "../../src/config/schema.js";
import { storagePrefixForKey } from "../../src/isolation/names.js";
import { createObjectStore, type ObjectStore, TenantStorage } from "../../src/isolation/storage/index.js";
import { compareStorageKeys } from "../../src/isolation/storage/keys.js";
import { assertTenantId } from "../../src/tenancy/tenant-id.js";
import { s3StorageTable, startS3, type TestS3 } from "../support/s3.js";
import { listAll } from "../support/storage.js";
import { storagePrefixForTenantId } from "../support/tenant-names.js";

const invalidKey = expect.objectContaining({ code: "invalid_storage_key" });
const HOSTILE_KEYS = [
  "../b/secret",
  "a/../../x",
  "/etc/passwd",
  "a\\b",
  "a\u0000b",
  ".",
  "..",
  "x".repeat(1025),
];

/** Every key in the raw store, across pages. */
async function allKeys(store: ObjectStore): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.list("", cursor === undefined ? { limit: 1000 } : { cursor, limit: 1000 });
    keys.push(...page.keys);
    cursor = page.nextCursor;
  } while (cursor !== undefined);
  return keys;
}

interface Backend {
  name: string;
  start(): Promise<void>;
  /** An empty store; `base` is a directory that must hold nothing but the store's own files. */
  fresh(): Promise<{ store: ObjectStore; base?: string }>;
  stop(): Promise<void>;
}

const fsBackend = (): Backend => {
  let base: string | undefined;
  return {
    name: "fs",
    async start() {},
    async fresh() {
      base = await mkdtemp(join(tmpdir(), "tenantry-fs-"));
      return {
        store: createObjectStore(storageSchema.parse({ backend: "fs", root: join(base, "objects") })),
        base,
      };
    },
    async stop() {
      if (base !== undefined) await rm(base, { recursive: true, force: true });
    },
  };
};

const s3Backend = (): Backend => {
  let s3: TestS3 | undefined;
  let store: ObjectStore | undefined;
  return {
    name: "s3",
    async start() {
      s3 = await startS3();
      store = createObjectStore(storageSchema.parse(s3StorageTable(s3)));
    },
    async fresh() {
      await store!.deletePrefix("");
      return { store: store! };
    },
    async stop() {
      await store?.close?.();
      await s3?.close();
    },
  };
};

describe.each([fsBackend(), s3Backend()])("tenant storage on $name", (backend) => {
  let store: ObjectStore;
  let base: string | undefined;
  beforeAll(() => backend.start());
  afterAll(() => backend.stop());
  beforeEach(async () => {
    ({ store, base } = await backend.fresh());
  });
  afterEach(async () => {
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  it("gives two tenants writing the same key their own object", async () => {
    const [a, b] = [TenantStorage.forKey(store, "a1"), TenantStorage.forKey(store, "b2")];
    await a.put("doc.txt", "from A", { contentType: "text/plain" });
    await b.put("doc.txt", "from B");
    expect(await a.getText("doc.txt")).toBe("from A");
    expect(await b.getText("doc.txt")).toBe("from B");
    expect(await a.delete("doc.txt")).toBe(true);
    expect(await a.delete("doc.txt")).toBe(false);
    expect(await a.get("doc.txt")).toBeUndefined();
    expect(await b.getText("doc.txt")).toBe("from B");
  });

  it("round-trips bytes and keeps `a` and `a/b` as separate objects", async () => {
    const t = TenantStorage.forKey(store, "1");
    const bytes = new Uint8Array([0, 255, 10, 13, 0x80]);
    await t.put("a", bytes);
    await t.put("a/b", "nested");
    await t.put("ünï/😀 x.bin", "unicode");
    expect(await t.get("a")).toEqual(bytes);
    expect(await t.getText("a/b")).toBe("nested");
    expect(await t.getText("ünï/😀 x.bin")).toBe("unicode");
    await t.put("a", "replaced");
    expect(await t.getText("a")).toBe("replaced");
  });

  it("lists tenant-relative keys and never another tenant's, even when its prefix string is shorter", async () => {
    const [t1, t10] = [TenantStorage.forKey(store, "1"), TenantStorage.forKey(store, "10")];
    await t10.put("secret", "10's");
    await t10.put("0/x", "10's");
    await t1.put("mine", "1's");
    expect(await listAll(t1)).toEqual(["mine"]);
    expect(await listAll(t10)).toEqual(["0/x", "secret"]);
    // `t/1` + `0/x` would be `t/10/x`… but the prefix ends in `/`, so there is nothing to find.
    expect(await t1.get("0/x")).toBeUndefined();
    expect(await listAll(t1, "0")).toEqual([]);
    // The raw store shows why the trailing `/` matters: without it, `t/1` also matches `t/10/…`.
    expect((await store.list("t/1", { limit: 10 })).keys).toEqual(["t/1/mine", "t/10/0/x", "t/10/secret"]);
  });

  it("filters by prefix, whole or partial segment", async () => {
    const t = TenantStorage.forKey(store, "7");
    for (const key of ["docs/a", "docs/b/c", "doc", "docx/d", "other"]) await t.put(key, key);
    expect(await listAll(t, "docs/")).toEqual(["docs/a", "docs/b/c"]);
    expect(await listAll(t, "doc")).toEqual(["doc", "docs/a", "docs/b/c", "docx/d"]);
    expect(await listAll(t, "docs/b")).toEqual(["docs/b/c"]);
    expect(await listAll(t, "nothing/")).toEqual([]);
  });

  it("pages through every key exactly once, in UTF-8 byte order", async () => {
    const [t, other] = [TenantStorage.forKey(store, "3"), TenantStorage.forKey(store, "30")];
    const keys = Array.from({ length: 23 }, (_, i) => (i % 3 === 0 ? `dir/${i}` : `k${i}`));
    // No U+E000-U+FFFF beside astral characters: s3rver sorts those by UTF-16, unlike S3 (see
    // storage-fs.test.ts for that case).
    keys.push("😀", "é", "Z", "a/b/c/d");
    for (const key of keys) await t.put(key, key);
    for (const key of ["k1", "zz"]) await other.put(key, "other");
    for (const limit of [1, 4, 7, 100]) {
      const listed = await listAll(t, "", limit);
      expect(listed).toEqual([...keys].sort(compareStorageKeys));
    }
    const first = await t.list("", { limit: 5 });
    expect(first.keys).toHaveLength(5);
    expect(first.nextCursor).toBe(first.keys[4]);
    expect((await t.list()).nextCursor).toBeUndefined();
    for (const limit of [0, 1001, 1.5]) {
      await expect(t.list("", { limit })).rejects.toMatchObject({ code: "invalid_argument" });
    }
  });

  it("rejects hostile keys with invalid_storage_key and writes nothing anywhere", async () => {
    const [a, b] = [TenantStorage.forKey(store, "a"), TenantStorage.forKey(store, "b")];
    await b.put("secret", "b's");
    for (const key of HOSTILE_KEYS) {
      await expect(a.put(key, "x")).rejects.toMatchObject({ code: "invalid_storage_key" });
      await expect(a.get(key)).rejects.toMatchObject({ code: "invalid_storage_key" });
      await expect(a.getText(key)).rejects.toMatchObject({ code: "invalid_storage_key" });
      await expect(a.delete(key)).rejects.toMatchObject({ code: "invalid_storage_key" });
      await expect(a.list("", { cursor: key })).rejects.toMatchObject({ code: "invalid_storage_key" });
    }
    for (const prefix of ["../", "../b/", "/", "a\\", "a\u0000", "./", "x".repeat(1025)]) {
      await expect(a.list(prefix)).rejects.toThrow(invalidKey);
    }
    // Keys valid alone but too long once the tenant prefix is added.
    await expect(a.put("x".repeat(1024), "x")).rejects.toThrow(/with the tenant prefix/);
    const fits = `${Array.from({ length: 10 }, () => "x".repeat(100)).join("/")}/${"y".repeat(10)}`;
    expect(fits.length + "t/a/".length).toBe(1024);
    await expect(a.put(`${fits}y`, "x")).rejects.toThrow(/with the tenant prefix/);
    await a.put(fits, "fits");
    expect(await allKeys(store)).toEqual([`t/a/${fits}`, "t/b/secret"]);
    expect(await b.getText("secret")).toBe("b's");
    if (base !== undefined) expect(await readdir(base)).toEqual(["objects"]);
  });

  it("enforces maxObjectBytes in UTF-8 bytes", async () => {
    const t = TenantStorage.forKey(store, "9", { maxObjectBytes: 10 });
    await t.put("ok", "0123456789");
    await expect(t.put("big", "é".repeat(6))).rejects.toMatchObject({ code: "payload_too_large" });
    await expect(t.put("big", new Uint8Array(11))).rejects.toMatchObject({ code: "payload_too_large" });
    await expect(t.put("ct", "x", { contentType: "text/plain\r\nX: y" })).rejects.toMatchObject({
      code: "invalid_argument",
    });
    expect(await listAll(t)).toEqual(["ok"]);
  });

  it("refuses to read an object over maxObjectBytes that reached the backend another way", async () => {
    const t = TenantStorage.forKey(store, "9", { maxObjectBytes: 1024 });
    // Written straight to the backend, past TenantStorage's cap on put: another service, a
    // migration, anyone with write access to the bucket or directory.
    const over = new Uint8Array(1025).fill(7);
    await store.put(`${storagePrefixForKey("9")}over`, over);
    await store.put(`${storagePrefixForKey("9")}huge`, new Uint8Array(4 * 1024 * 1024));
    for (const key of ["over", "huge"]) {
      const error = await t.get(key).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toMatchObject({ code: "payload_too_large" });
      expect((error as Error).message).toContain("max_object_bytes (1024)");
      expect((error as Error).message).not.toContain(key);
      await expect(t.getText(key)).rejects.toMatchObject({ code: "payload_too_large" });
    }
    // The limit is on reads through the tenant's storage, not on the raw store (archives read all).
    expect(await store.get(`${storagePrefixForKey("9")}over`)).toEqual(over);
  });

  it("reads an object of exactly maxObjectBytes, and an empty one", async () => {
    const t = TenantStorage.forKey(store, "9", { maxObjectBytes: 1024 });
    const exact = new Uint8Array(1024).map((_, i) => i % 251);
    await store.put(`${storagePrefixForKey("9")}exact`, exact);
    await t.put("empty", new Uint8Array());
    expect(await t.get("exact")).toEqual(exact);
    expect(await t.get("empty")).toEqual(new Uint8Array());
    expect(await t.get("missing")).toBeUndefined();
    const big = TenantStorage.forKey(store, "9", { maxObjectBytes: 64 * 1024 });
    const large = new Uint8Array(64 * 1024).map((_, i) => (i * 7) % 256);
    await store.put(`${storagePrefixForKey("9")}large`, large);
    expect(await big.get("large")).toEqual(large);
  });

  it("streams objects in and out (archives): bytes intact, a missing object is undefined, keys validated", async () => {
    const body = randomBytes(300 * 1024);
    const chunks = async function* () {
      for (let at = 0; at < body.length; at += 64 * 1024) yield body.subarray(at, at + 64 * 1024);
    };
    const sha256 = createHash("sha256").update(body).digest("hex");
    await store.putStream?.("t/1/streamed", chunks(), { size: body.length, sha256 });
    const out: Buffer[] = [];
    for await (const chunk of (await store.getStream?.("t/1/streamed")) ?? []) out.push(Buffer.from(chunk));
    expect(Buffer.concat(out).equals(body)).toBe(true);
    expect(Buffer.from((await store.get("t/1/streamed")) ?? []).equals(body)).toBe(true);
    expect(await store.getStream?.("t/1/missing")).toBeUndefined();
    await expect(store.getStream?.("t/1/../x")).rejects.toEqual(invalidKey);
    await expect(store.putStream?.("/abs", chunks())).rejects.toEqual(invalidKey);
    expect(await allKeys(store)).toEqual(["t/1/streamed"]);
  });

  it("deletePrefix removes one tenant's objects and no other's", async () => {
    const [t1, t10] = [TenantStorage.forKey(store, "1"), TenantStorage.forKey(store, "10")];
    for (const key of ["a", "b/c", "d/e/f"]) await t1.put(key, key);
    await t10.put("a", "stays");
    expect(await store.deletePrefix(storagePrefixForKey("1"))).toBe(3);
    expect(await listAll(t1)).toEqual([]);
    expect(await t10.getText("a")).toBe("stays");
  });

  it("seed defect 4: the seed's tenantId/key layout nests tenant `a/b` inside `a`; ours never nests", async () => {
    // The seed's mapping: tenant "a" lists and reads tenant "a/b"'s objects.
    const seedA = new TenantStorage(store, "a/");
    const seedAB = new TenantStorage(store, "a/b/");
    await seedAB.put("secret", "a/b's");
    expect(await listAll(seedA)).toContain("b/secret");
    expect(await seedA.getText("b/secret")).toBe("a/b's");

    // Ours: "a/b" is no tenant id, and ids that look alike get unrelated prefixes.
    expect(() => assertTenantId("a/b")).toThrow(expect.objectContaining({ code: "invalid_tenant_id" }));
    const ids = ["a", "a.b", "a:b", "a-b", "A", "...", ".a", "a..b"];
    const tenants = ids.map((id) => new TenantStorage(store, storagePrefixForTenantId(id)));
    for (const [i, t] of tenants.entries()) await t.put("b/secret", ids[i]!);
    for (const [i, t] of tenants.entries()) {
      expect(await listAll(t)).toEqual(["b/secret"]);
      expect(await t.getText("b/secret")).toBe(ids[i]);
    }
  });
});

describe("storage prefixes never nest (property)", () => {
  const isNested = (p: string, q: string) => p !== q && q.startsWith(p);
  it("for tenant ids", () => {
    const id = fc.stringMatching(/^[A-Za-z0-9._:-]{1,64}$/).filter((id) => id !== "." && id !== "..");
    fc.assert(
      fc.property(id, id, (x, y) => {
        fc.pre(x !== y);
        expect(isNested(storagePrefixForTenantId(x), storagePrefixForTenantId(y))).toBe(false);
        expect(storagePrefixForTenantId(x)).not.toBe(storagePrefixForTenantId(y));
      }),
      { numRuns: 2000 },
    );
    // Extending an id by a character is the shape that nested in the seed (`a` → `a/b`).
    fc.assert(
      fc.property(
        fc.stringMatching(/^[A-Za-z0-9._:-]{1,63}$/).filter((id) => id !== "." && id !== ".."),
        fc.constantFrom(".", ":", "-", "_", "b"),
        (x, c) => {
          expect(isNested(storagePrefixForTenantId(x), storagePrefixForTenantId(x + c))).toBe(false);
        },
      ),
    );
  });

  it("for registry keys", () => {
    const key = fc.stringMatching(/^[a-z0-9]{1,40}$/);
    fc.assert(
      fc.property(key, key, (x, y) => {
        fc.pre(x !== y);
        expect(isNested(storagePrefixForKey(x), storagePrefixForKey(y))).toBe(false);
      }),
      { numRuns: 2000 },
    );
    expect(isNested(storagePrefixForKey("1"), storagePrefixForKey("10"))).toBe(false);
  });
});
