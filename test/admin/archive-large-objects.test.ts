import { randomBytes } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import { storagePrefixForKey } from "../../src/isolation/names.js";
import type { ObjectStore } from "../../src/isolation/storage/object-store.js";
import { readArchive } from "../../src/isolation/tenant-archive.js";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { s3StorageTable, startS3, type TestS3 } from "../support/s3.js";
import { mcp, toolResult } from "./helpers.js";

const MiB = 1024 * 1024;
const actor = { id: "test" };
/** Byte equality without the matcher's element-by-element walk (slow at mebibytes). */
const same = (a: Uint8Array | undefined, b: Uint8Array) => a !== undefined && Buffer.from(a).equals(b);

/**
 * `max_object_bytes` bounds what tools read, but the bucket or directory can hold larger objects,
 * put there by anything else. Deprovisioning archives every object: it must not read one into
 * memory whole. The fs and S3 stores stream each object to its archive file and back on restore;
 * a store that cannot stream is read whole only up to `max_object_bytes`, and a larger object fails
 * the deprovision, leaving the tenant suspended.
 */
describe.each(["fs", "s3"] as const)("archiving objects larger than max_object_bytes (%s)", (backend) => {
  let s3: TestS3 | undefined;
  let h: Harness;
  let store: ObjectStore;
  const big = randomBytes(3 * MiB);

  beforeAll(async () => {
    s3 = backend === "s3" ? await startS3("tenantry-archive") : undefined;
    h = await startHarness({
      tenants: [{ id: "acme" }, { id: "globex" }, { id: "initech" }],
      tools: demoTools,
      migrations: demoMigrations,
      config: {
        storage: { ...(s3 ? s3StorageTable(s3) : {}), max_object_bytes: MiB },
        auth: { multi_tenant: { registry_cache_ttl_ms: 50 } },
      },
    });
    store = h.app.objects;
    // Straight into the backend, behind TenantStorage's cap on put.
    for (const id of ["acme", "globex"]) {
      const prefix = storagePrefixForKey((await h.app.tenants.show(id)).key);
      await store.put(`${prefix}big.bin`, big);
      await store.put(`${prefix}small.txt`, new TextEncoder().encode(`${id}'s`));
    }
  }, 60_000);
  afterAll(async () => {
    await h?.close();
    await s3?.close();
  });
  afterEach(() => vi.restoreAllMocks());

  it("streams such an object into the archive byte for byte, and back on restore, never reading it whole", async () => {
    const get = vi.spyOn(store, "get");
    const put = vi.spyOn(store, "put");
    const record = await h.app.tenants.deprovision(actor, "globex");
    expect(get.mock.calls.filter(([key]) => key.endsWith("/big.bin"))).toEqual([]);

    const manifest = await readArchive(record.archivePath as string);
    const entry = manifest.objects.find((o) => o.key === "big.bin");
    expect(entry?.bytes).toBe(big.byteLength);
    expect(same(await readFile(join(record.archivePath as string, entry?.file as string)), big)).toBe(true);
    expect(manifest.objects.map((o) => o.key).sort()).toEqual(["big.bin", "small.txt"]);

    await h.app.tenants.purge(actor, { now: true });
    const restored = await h.app.tenants.restore(actor, record.archivePath as string);
    expect(put.mock.calls.filter(([key]) => key.endsWith("/big.bin"))).toEqual([]);
    get.mockRestore();
    const prefix = storagePrefixForKey(restored.key);
    expect(same(await store.get(`${prefix}big.bin`), big)).toBe(true);
    expect(new TextDecoder().decode(await store.get(`${prefix}small.txt`))).toBe("globex's");
  }, 60_000);

  it("from a store that cannot stream, refuses it: the deprovision fails cleanly and the tenant stays suspended", async () => {
    // A custom ObjectStore without the optional getStream.
    Object.defineProperty(store, "getStream", { value: undefined, configurable: true });
    try {
      const error = await h.app.tenants.deprovision(actor, "acme").catch((e: unknown) => e);
      expect(isTenantryError(error, "payload_too_large")).toBe(true);
      expect((error as Error).message).toBe(
        `object of ${big.byteLength} bytes exceeds max_object_bytes (${MiB}): not read`,
      );
    } finally {
      delete (store as { getStream?: unknown }).getStream;
    }
    expect((await h.app.tenants.show("acme")).status).toBe("suspended");
    const left = await readdir(h.app.config.lifecycle.archive_dir);
    expect(left.filter((name) => name.includes("acme-"))).toEqual([]);
    // Once the store streams again, the same deprovision goes through.
    expect((await h.app.tenants.deprovision(actor, "acme")).status).toBe("deprovisioned");
  }, 60_000);

  it("restore checks the bytes it copies, not only the ones it verified first: a file changed in between fails it", async () => {
    const { archivePath } = await h.app.tenants.show("acme");
    const manifest = await readArchive(archivePath as string);
    const entry = manifest.objects.find((o) => o.key === "small.txt")!;
    const file = join(archivePath as string, entry.file);
    // The archive passes its checks, then the file changes (same size) before it is copied.
    const tamper = async () => writeFile(file, "ACME's");
    const putStream = store.putStream?.bind(store);
    const put = store.put.bind(store);
    vi.spyOn(store, "put").mockImplementation(async (key, body, type) => {
      if (key.endsWith("/small.txt")) await tamper();
      return put(key, body, type);
    });
    if (putStream) {
      vi.spyOn(store, "putStream").mockImplementation(async (key, body, options) => {
        if (key.endsWith("/small.txt")) await tamper();
        return putStream(key, body, options);
      });
    }
    const error = await h.app.tenants.restore(actor, archivePath as string).catch((e: unknown) => e);
    expect(isTenantryError(error, "invalid_argument")).toBe(true);
    expect((error as Error).message).toMatch(/checksum mismatch/);
    // Not served, and never holding the changed bytes as if restored.
    const record = await h.app.tenants.show("acme");
    expect(record.status).toBe("provisioning");
    const stored = await store.get(`${storagePrefixForKey(record.key)}small.txt`);
    expect(stored === undefined ? undefined : new TextDecoder().decode(stored)).not.toBe("ACME's");
  }, 60_000);

  it("restore checks the rows it inserts the same way: a rows file changed after the checks fails it, nothing kept", async () => {
    toolResult(
      await mcp(h, await h.token("initech"), "tools/call", {
        name: "notes_create",
        arguments: { title: "kept-note", body: "b" },
      }),
    );
    const { archivePath } = await h.app.tenants.deprovision(actor, "initech");
    const manifest = await readArchive(archivePath as string);
    const notes = manifest.tables.find((t) => t.rows > 0)!;
    const file = join(archivePath as string, notes.file);
    const original = await readFile(file, "utf8");
    expect(original).toContain("kept-note");
    // Provisioning writes the storage marker after readArchive and before the rows are read.
    const put = store.put.bind(store);
    vi.spyOn(store, "put").mockImplementation(async (key, body, type) => {
      if (key.startsWith("_tenantry/markers/"))
        await writeFile(file, original.replace("kept-note", "KEPT-NOTE"));
      return put(key, body, type);
    });
    const error = await h.app.tenants.restore(actor, archivePath as string).catch((e: unknown) => e);
    expect(isTenantryError(error, "invalid_argument")).toBe(true);
    expect((error as Error).message).toMatch(/checksum mismatch/);
    expect((await h.app.tenants.show("initech")).status).toBe("provisioning");
  }, 60_000);
});
