import { afterAll, describe, expect, it } from "vitest";
import { type E2eServer, startServer } from "../e2e/helpers.js";

/*
 * close() may be called more than once (a signal handler and the embedder's own shutdown, a test
 * and its afterAll). Every call must resolve, and only once everything is closed.
 */
describe("TenantryApp.close() called twice while a request is still running", () => {
  let server: E2eServer | undefined;
  afterAll(async () => {
    await server?.close().catch(() => {});
  });

  it("resolves both calls after the request finished and the closers ran", async () => {
    server = await startServer({ config: {}, tools: [], tenants: [] });
    const { app } = server;
    // A readiness check that takes 300 ms, whose client goes away once it has begun: the
    // request holds no connection open but is still running when close() is called.
    const admin = app.dbs.admin;
    const query = admin.query.bind(admin);
    let finished = false;
    let begin: () => void = () => {};
    const begun = new Promise<void>((resolve) => {
      begin = resolve;
    });
    admin.query = (async (...args: Parameters<typeof query>) => {
      begin();
      await new Promise((resolve) => setTimeout(resolve, 300));
      finished = true;
      return query(...args);
    }) as typeof admin.query;
    const client = new AbortController();
    const asked = fetch(`${server.url}/readyz`, { signal: client.signal }).catch(() => {});
    // Not a fixed delay: on a loaded machine the request may take longer than that to arrive.
    await begun;
    client.abort();
    await asked;
    let closedDbs = false;
    const closeDbs = app.dbs.close.bind(app.dbs);
    app.dbs.close = async () => {
      await closeDbs();
      closedDbs = true;
    };
    const outcome = (p: Promise<void>) =>
      Promise.race([
        p.then(() => ({ finished, closedDbs })),
        new Promise((resolve) => setTimeout(() => resolve("still waiting after 3 s"), 3000)),
      ]);
    const [first, second] = await Promise.all([outcome(app.close()), outcome(app.close())]);
    expect(first).toEqual({ finished: true, closedDbs: true });
    expect(second).toEqual({ finished: true, closedDbs: true });
  }, 20_000);
});
