import { Readable } from "node:stream";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import { storagePrefixForKey } from "../../src/isolation/names.js";
import { S3ObjectStore } from "../../src/isolation/storage/s3-store.js";
import { TenantStorage } from "../../src/isolation/storage/tenant-storage.js";
import { S3RVER_CREDENTIALS, startS3, type TestS3 } from "../support/s3.js";

const MiB = 1024 * 1024;
/** Byte equality without the matcher's element-by-element walk (slow at a mebibyte). */
const sameBytes = (a: Uint8Array | undefined, b: Uint8Array) => a !== undefined && Buffer.from(a).equals(b);

/**
 * `[storage] max_object_bytes` caps what ctx.storage.get reads, not only what put writes: an object
 * put into the bucket by anything else (another service, a migration, whoever holds write access)
 * must not be read into the server's memory whole.
 */
describe("S3 reads bounded by max_object_bytes", () => {
  let s3: TestS3;
  let store: S3ObjectStore;
  let raw: S3Client;
  const prefix = storagePrefixForKey("9");

  beforeAll(async () => {
    s3 = await startS3("tenantry-limits");
    const options = { endpoint: s3.endpoint, forcePathStyle: true, region: "us-east-1" };
    store = new S3ObjectStore({ bucket: s3.bucket, ...options, credentials: { ...S3RVER_CREDENTIALS } });
    raw = new S3Client({ ...options, credentials: { ...S3RVER_CREDENTIALS } });
  }, 30_000);
  afterAll(async () => {
    raw?.destroy();
    await store?.close();
    await s3?.close();
  });
  afterEach(() => vi.restoreAllMocks());

  const putBehindTenantrysBack = (key: string, body: Uint8Array) =>
    raw.send(new PutObjectCommand({ Bucket: s3.bucket, Key: prefix + key, Body: body }));

  it("refuses an object over the limit placed straight in the bucket, then serves the next get", async () => {
    await putBehindTenantrysBack("big.bin", new Uint8Array(8 * MiB));
    await putBehindTenantrysBack("exact.bin", new Uint8Array(MiB).fill(1));
    const t = TenantStorage.forKey(store, "9", { maxObjectBytes: MiB });
    const error = await t.get("big.bin").catch((e: unknown) => e);
    expect(isTenantryError(error, "payload_too_large")).toBe(true);
    expect((error as Error).message).toBe(
      `object of ${8 * MiB} bytes exceeds max_object_bytes (${MiB}): not read`,
    );
    expect(sameBytes(await t.get("exact.bin"), new Uint8Array(MiB).fill(1))).toBe(true);
  });

  /** A GetObject answer whose body yields `chunks` chunks of 64 KiB, counting what is pulled. */
  function fakeAnswer(chunks: number, contentLength: number | undefined) {
    const pulled = { bytes: 0 };
    const body = Readable.from(
      (function* () {
        for (let i = 0; i < chunks; i++) {
          pulled.bytes += 64 * 1024;
          yield Buffer.alloc(64 * 1024, 1);
        }
      })(),
    );
    // What the SDK mixes into a Node body: the way to read it whole.
    Object.assign(body, {
      async transformToByteArray() {
        const parts: Buffer[] = [];
        for await (const part of body) parts.push(part as Buffer);
        return new Uint8Array(Buffer.concat(parts));
      },
    });
    vi.spyOn(S3Client.prototype, "send").mockImplementationOnce(async () => ({
      Body: body,
      ...(contentLength === undefined ? {} : { ContentLength: contentLength }),
      $metadata: { httpStatusCode: 200 },
    }));
    return { body, pulled };
  }

  it("takes the declared ContentLength at its word: nothing of the body is read", async () => {
    const { body, pulled } = fakeAnswer(64, 64 * 64 * 1024);
    const t = TenantStorage.forKey(store, "9", { maxObjectBytes: MiB });
    await expect(t.get("declared")).rejects.toMatchObject({ code: "payload_too_large" });
    expect(pulled.bytes).toBeLessThanOrEqual(64 * 1024); // at most what the stream pre-buffered
    expect(body.destroyed).toBe(true);
  });

  it("without a ContentLength, counts the body as it streams and stops past the limit", async () => {
    const { body, pulled } = fakeAnswer(64, undefined); // 4 MiB on offer
    const t = TenantStorage.forKey(store, "9", { maxObjectBytes: MiB });
    await expect(t.get("undeclared")).rejects.toMatchObject({ code: "payload_too_large" });
    expect(pulled.bytes).toBeLessThanOrEqual(MiB + 2 * 64 * 1024);
    expect(body.destroyed).toBe(true);
  });

  it("without a ContentLength, reads a body within the limit", async () => {
    fakeAnswer(16, undefined); // exactly 1 MiB
    const t = TenantStorage.forKey(store, "9", { maxObjectBytes: MiB });
    expect(sameBytes(await t.get("undeclared-ok"), new Uint8Array(MiB).fill(1))).toBe(true);
  });

  it("putStream: a body that fails part-way fails the put at once and throws nothing elsewhere", async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on("uncaughtException", onUncaught);
    try {
      const failing = async function* () {
        yield Buffer.alloc(64 * 1024, 1);
        await new Promise((resolve) => setTimeout(resolve, 20));
        throw new Error("the archive file could not be read");
      };
      const started = Date.now();
      const error = await store
        .putStream(`${prefix}partial.bin`, failing(), { size: 256 * 1024 })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(Error);
      expect((error as Error).message).toMatch(/could not be read|put failed/);
      // Not after the request timeout (30 s): the put is abandoned when its body fails.
      expect(Date.now() - started).toBeLessThan(5000);
      // (Whether a PUT abandoned part-way leaves an object is the server's business: S3 keeps none;
      // s3rver, the test server, stores what it received.)
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(uncaught).toEqual([]);
    } finally {
      process.off("uncaughtException", onUncaught);
    }
  }, 40_000);
});
