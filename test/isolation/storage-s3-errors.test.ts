import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import { S3ObjectStore } from "../../src/isolation/storage/s3-store.js";
import { S3RVER_CREDENTIALS, startS3, type TestS3 } from "../support/s3.js";

/** A bucket that does not exist is a deployment fault: every operation says so, none reports "no object". */
describe("S3 backend with a bucket that does not exist", () => {
  let s3: TestS3;
  let good: S3ObjectStore;
  let missing: S3ObjectStore;
  const make = (bucket: string) =>
    new S3ObjectStore({
      bucket,
      endpoint: s3.endpoint,
      forcePathStyle: true,
      credentials: { ...S3RVER_CREDENTIALS },
    });
  beforeAll(async () => {
    s3 = await startS3("tenantry-present");
    good = make("tenantry-present");
    missing = make("tenantry-missing-bucket");
  }, 30_000);
  afterAll(async () => {
    await good?.close();
    await missing?.close();
    await s3?.close();
  });

  it.each([
    ["put", () => missing.put("t/1/a", new Uint8Array([1]))],
    ["get", () => missing.get("t/1/a")],
    ["delete", () => missing.delete("t/1/a")],
    ["list", () => missing.list("t/1/", { limit: 10 })],
    ["deletePrefix", () => missing.deletePrefix("t/1/")],
  ] as const)("%s fails with backend_unavailable, naming neither bucket nor endpoint", async (_op, run) => {
    const error = await run().then(
      (value) => ({ resolved: value }),
      (e: unknown) => e,
    );
    expect(isTenantryError(error, "backend_unavailable")).toBe(true);
    expect((error as Error).message).not.toMatch(/tenantry-missing-bucket|127\.0\.0\.1/);
  });

  it("delete still answers false for a missing key in a bucket that exists, true for a present one", async () => {
    expect(await good.delete("t/1/never")).toBe(false);
    await good.put("t/1/x", new Uint8Array());
    expect(await good.get("t/1/x")).toEqual(new Uint8Array());
    expect(await good.delete("t/1/x")).toBe(true);
    expect(await good.delete("t/1/x")).toBe(false);
  });

  it("round-trips every byte value", async () => {
    const bytes = new Uint8Array(512).map((_, i) => i % 256);
    await good.put("t/1/bin", bytes.subarray(256), "application/octet-stream");
    expect(await good.get("t/1/bin")).toEqual(bytes.subarray(256));
  });
});
