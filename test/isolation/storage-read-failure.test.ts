import { mkdtemp, open, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import { FsObjectStore } from "../../src/isolation/storage/fs-store.js";
import type { ObjectStore } from "../../src/isolation/storage/object-store.js";
import { S3ObjectStore } from "../../src/isolation/storage/s3-store.js";

/*
 * A streamed read that fails part-way (a disk error, a connection dropped mid-body) fails with
 * `backend_unavailable`, the backend's error as cause: its message names a server path or an
 * endpoint, which is not for the caller (the admin API would have answered 500 internal).
 */
async function readAll(store: ObjectStore, key: string): Promise<{ bytes: number; error: unknown }> {
  let bytes = 0;
  try {
    const body = await store.getStream!(key);
    for await (const chunk of body!) bytes += chunk.byteLength;
  } catch (error) {
    return { bytes, error };
  }
  return { bytes, error: undefined };
}

describe("streamed reads that fail part-way", () => {
  let dir: string;
  let http: Server;
  let endpoint: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "tenantry-read-failure-"));
    // An S3 endpoint that answers a GET with the headers of 1 MiB and 1 KiB of it, then drops.
    http = createServer((req, res) => {
      if (req.method !== "GET") {
        res.writeHead(500).end();
        return;
      }
      res.writeHead(200, {
        "Content-Length": String(1024 * 1024),
        "Content-Type": "application/octet-stream",
      });
      res.write(Buffer.alloc(1024, 7), () => res.socket?.destroy());
    });
    await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
    endpoint = `http://127.0.0.1:${(http.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => http?.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  it("fs: a read error of the file is backend_unavailable, without the path", async () => {
    const store = new FsObjectStore(dir);
    await store.put("t/1/big", new Uint8Array(200_000).fill(1));
    // Every FileHandle shares one prototype: fail its second read (the first chunk gets through).
    const probe = await open(join(dir, "probe"), "w");
    const proto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<unknown> };
    await probe.close();
    const read = proto.read;
    let reads = 0;
    const eio = Object.assign(new Error(`EIO: i/o error, read '${dir}/t/1/big'`), { code: "EIO" });
    const spy = vi.spyOn(proto, "read").mockImplementation(function (this: unknown, ...args: unknown[]) {
      return ++reads === 2 ? Promise.reject(eio) : read.apply(this, args);
    });
    let result: Awaited<ReturnType<typeof readAll>>;
    try {
      result = await readAll(store, "t/1/big");
    } finally {
      spy.mockRestore();
    }
    expect(result.bytes).toBeGreaterThan(0); // it failed part-way
    expect(isTenantryError(result.error, "backend_unavailable")).toBe(true);
    expect((result.error as Error).message).not.toContain(dir);
    expect((result.error as Error).cause).toBe(eio);
  });

  it("S3: a body cut off part-way is backend_unavailable, without the endpoint", async () => {
    const store = new S3ObjectStore({
      bucket: "cut",
      endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: "k", secretAccessKey: "s" },
      requestTimeoutMs: 2000,
    });
    try {
      const result = await readAll(store, "t/1/big");
      expect(result.bytes).toBe(1024);
      expect(isTenantryError(result.error, "backend_unavailable")).toBe(true);
      expect((result.error as Error).message).not.toMatch(/127\.0\.0\.1/);
      expect((result.error as Error).cause).toBeInstanceOf(Error);
    } finally {
      await store.close();
    }
  });
});
