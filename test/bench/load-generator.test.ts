import { fork } from "node:child_process";
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

/*
 * The benchmark's load generator gives each connection one client's request (one token, one
 * tenant) for the whole run. autocannon's `setRequest` changes only a connection's next request:
 * with it, every connection fell back to the first request after one round, and the "ten tenants"
 * of the benchmark were one.
 */
describe("bench/load.mjs", () => {
  it("sends each connection's own request for the whole run", async () => {
    const seen = new Map<string, number>();
    const server = createServer((req, res) => {
      const who = String(req.headers.authorization);
      seen.set(who, (seen.get(who) ?? 0) + 1);
      req.resume();
      req.on("end", () => res.end("{}"));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    const load = fork(fileURLToPath(new URL("../../bench/load.mjs", import.meta.url)), [], {
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    });
    try {
      const result = new Promise<{ total: number }>((resolve, reject) => {
        load.on("message", (m) => {
          if (m !== "measuring") resolve(m as { total: number });
        });
        load.once("exit", (code) => reject(new Error(`load.mjs exited with ${code}`)));
      });
      const requests = ["a", "b", "c", "d"].map((t) => ({
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${t}` },
        body: "{}",
      }));
      load.send({ url: `http://127.0.0.1:${port}/mcp`, connections: 8, duration: 1, warmup: 0, requests });
      await result;
      const total = [...seen.values()].reduce((a, b) => a + b, 0);
      expect([...seen.keys()].sort()).toEqual(["Bearer a", "Bearer b", "Bearer c", "Bearer d"]);
      // Two connections each: a quarter of the requests, give or take scheduling.
      for (const n of seen.values()) expect(n / total).toBeGreaterThan(0.15);
    } finally {
      load.kill();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
