import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { rawMcpPost } from "../support/raw-mcp.js";

/*
 * A client that goes away while its request waits before the body is read (an uncached tenant's
 * registry read, a rate-limit decision from Redis). Node destroys the unanswered request when its
 * socket closes, and a body read started after that heard nothing: the handler never ended, and
 * close() (SIGTERM) waited for it forever — a replica that would not stop.
 */
describe("a client gone while its request waits for admission", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ tenants: 1 });
  });
  afterAll(async () => {
    await h?.close().catch(() => {});
  });

  it("ends its handler, and close() completes", async () => {
    // Admission waits 300 ms on the registry; the client leaves after 100 ms, its body sent whole.
    const store = h.app.registry.store;
    const get = store.get.bind(store);
    let reads = 0;
    store.get = (async (...args: Parameters<typeof get>) => {
      reads++;
      await new Promise((resolve) => setTimeout(resolve, 300));
      return get(...args);
    }) as typeof store.get;
    h.app.registry.invalidate();
    const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" });
    await new Promise<void>((resolve) => {
      const req = rawMcpPost(h.mcpUrl, h.tenants[0]!.token, {
        "Content-Length": String(Buffer.byteLength(body)),
      });
      req.on("error", () => resolve());
      req.on("close", () => resolve());
      req.end(body);
      setTimeout(() => req.destroy(), 100);
    });
    // Wait until the registry read has ended: the request is then past admission, on to its body.
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(reads).toBeGreaterThan(0);
    const closed = await Promise.race([
      h.app.close().then(() => "closed"),
      new Promise((resolve) => setTimeout(() => resolve("still waiting after 3 s"), 3000)),
    ]);
    expect(closed).toBe("closed");
  });
});
