import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { mcp } from "../admin/helpers.js";

/**
 * A client that sends its request slowly, or stops half-way, must not hold a socket (and the file
 * descriptor and memory behind it) for long: anyone can open connections before authenticating,
 * so a few thousand stalled ones would otherwise exhaust the replica (slowloris). Past
 * `[server] request_timeout_ms` the server answers 408 and closes the connection.
 */
describe("slow and stalled senders", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ tenants: 1, config: { server: { request_timeout_ms: 500 } } });
  });
  afterAll(async () => h?.close());

  /** Sends `bytes` on a new connection, then nothing; resolves with what came back and when the socket closed. */
  function stall(bytes: string): Promise<{ reply: string; closedAfterMs: number }> {
    const { port } = new URL(h.mcpUrl);
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const socket = connect(Number(port), "127.0.0.1", () => socket.write(bytes));
      let reply = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk) => {
        reply += chunk;
      });
      socket.on("error", () => {});
      const giveUp = setTimeout(() => {
        socket.destroy();
        reject(new Error("the server kept the stalled connection open for 10 s"));
      }, 10_000);
      socket.on("close", () => {
        clearTimeout(giveUp);
        resolve({ reply, closedAfterMs: performance.now() - started });
      });
    });
  }

  it("closes a connection whose headers never finish, with 408", async () => {
    const { reply, closedAfterMs } = await stall("POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Ty");
    expect(reply).toMatch(/^HTTP\/1\.1 408 /);
    expect(closedAfterMs).toBeGreaterThanOrEqual(400);
  });

  it("closes a connection whose body stops half-way, with 408", async () => {
    const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" });
    const { reply } = await stall(
      [
        "POST /mcp HTTP/1.1",
        "Host: localhost",
        "Content-Type: application/json",
        "Accept: application/json, text/event-stream",
        `Authorization: Bearer ${h.tenants[0]!.token}`,
        `Content-Length: ${Buffer.byteLength(body)}`,
        "",
        body.slice(0, 10),
      ].join("\r\n"),
    );
    // The request was admitted and is waiting for its body; the timeout ends it all the same.
    expect(reply).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("serves a request sent in time, on a connection that then idles past the timeout", async () => {
    const call = () => mcp(h, h.tenants[0]!.token, "tools/list");
    expect((await call()).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 1500)); // keep-alive idle is not a slow request
    expect((await call()).status).toBe(200);
  });
});
