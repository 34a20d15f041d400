import { createServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isTenantryError } from "../../src/errors.js";
import { S3ObjectStore } from "../../src/isolation/storage/s3-store.js";

/*
 * An S3 endpoint that accepts connections and never answers (a hung proxy, a black-holed load
 * balancer). The SDK has no timeout of its own: without one, a tool call would wait forever.
 */
describe("S3 that accepts and never answers", () => {
  const sockets = new Set<Socket>();
  const silent = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  let store: S3ObjectStore;

  beforeAll(async () => {
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address() as { port: number };
    store = new S3ObjectStore({
      bucket: "silent",
      endpoint: `http://127.0.0.1:${port}`,
      forcePathStyle: true,
      credentials: { accessKeyId: "k", secretAccessKey: "s" },
      requestTimeoutMs: 200,
    });
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => silent.close(resolve));
  });

  it.each([
    ["put", () => store.put("t/1/a", new Uint8Array([1]))],
    ["get", () => store.get("t/1/a")],
    ["list", () => store.list("t/1/", { limit: 10 })],
  ] as const)(
    "%s fails with backend_unavailable after the request timeout (and the SDK's retries)",
    async (_op, run) => {
      const started = performance.now();
      const error = await run().catch((e: unknown) => e);
      expect(isTenantryError(error, "backend_unavailable")).toBe(true);
      // Three attempts of 200 ms and their back-off: far below the test's own timeout.
      expect(performance.now() - started).toBeLessThan(4000);
    },
  );
});
