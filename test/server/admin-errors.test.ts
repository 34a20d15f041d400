/**
 * An admin request that fails unexpectedly answers 500 with nothing about internals, like /mcp;
 * the operator finds what happened in the log, under the request id the caller was given.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TenantService } from "../../src/admin/tenant-service.js";
import { AdminRoutes, type AdminRoutesDeps } from "../../src/server/admin-routes.js";
import { RequestIds } from "../../src/server/request-id.js";
import { captureLogs } from "../support/logs.js";

const SECRET = "control-secret-for-this-test";

describe("admin API failures", () => {
  const { logger, lines } = captureLogs();
  let server: Server;
  let url: string;

  beforeAll(async () => {
    const tenants = {
      list: async () => {
        throw new Error("connection string postgres://owner:hunter2@db/app refused");
      },
    } as unknown as TenantService;
    const routes = new AdminRoutes({
      tenants,
      mapper: { wwwAuthenticate: () => "Bearer" },
      ids: new RequestIds("test"),
      controlSecret: SECRET,
      log: logger,
    } as unknown as AdminRoutesDeps);
    server = createServer((req, res) => void routes.handle(req, res, new URL(req.url ?? "/", "http://x")));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("answers 500 internal without the cause, and logs the cause with the request id", async () => {
    const res = await fetch(`${url}/admin/api/tenants`, {
      headers: { authorization: `Tenantry-Control ${SECRET}` },
    });
    expect(res.status).toBe(500);
    const body = await res.text();
    expect(JSON.parse(body)).toMatchObject({ error: "internal" });
    expect(body).not.toContain("hunter2");
    const requestId = res.headers.get("x-request-id");
    expect(requestId).toMatch(/^test-/);
    const logged = lines.find((l) => l.msg === "admin request failed");
    expect(logged).toMatchObject({
      level: 50,
      request_id: requestId,
      err: { message: expect.stringContaining("refused") },
    });
  });

  it("does not log a refusal the caller can act on (4xx)", async () => {
    const before = lines.length;
    const res = await fetch(`${url}/admin/api/tenants`, {
      headers: { authorization: "Tenantry-Control wrong" },
    });
    expect(res.status).toBe(401);
    expect(lines.length).toBe(before);
  });
});
