import { createConnection, createServer, type Socket } from "node:net";
import { PG_HOST, PG_PORT } from "./services.js";

/**
 * A TCP proxy in front of the test PostgreSQL that can stall: connections stay open and new ones
 * are accepted, but nothing is forwarded either way (a network partition, a hung primary, a
 * failover that left half-open connections). Refused connections fail fast anyway; silence is what
 * only a client-side deadline ends. What a stall held back is delivered on {@link resume}, so a late
 * answer reaches any connection still open, as when a partition heals.
 */
export interface PgProxy {
  readonly port: number;
  /** `url` with its host and port replaced by the proxy's. */
  via(url: string): string;
  stall(): void;
  resume(): void;
  /** Destroys every connection and stops listening. */
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket;
  toServer: Buffer[];
  toClient: Buffer[];
}

export async function startPgProxy(): Promise<PgProxy> {
  let stalled = false;
  let closed = false;
  const pairs = new Set<Pair>();
  const server = createServer((client) => {
    if (closed) {
      client.destroy();
      return;
    }
    const upstream = createConnection(PG_PORT, PG_HOST);
    const pair: Pair = { client, upstream, toServer: [], toClient: [] };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on("error", end);
      socket.on("close", end);
    }
    client.on("data", (d: Buffer) => (stalled ? pair.toServer.push(d) : upstream.write(d)));
    upstream.on("data", (d: Buffer) => (stalled ? pair.toClient.push(d) : client.write(d)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    port,
    via: (url) => url.replace(/@[^/]+\//, `@127.0.0.1:${port}/`),
    stall() {
      stalled = true;
    },
    resume() {
      stalled = false;
      for (const pair of pairs) {
        for (const d of pair.toServer.splice(0)) pair.upstream.write(d);
        for (const d of pair.toClient.splice(0)) pair.client.write(d);
      }
    },
    async close() {
      closed = true;
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
