import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/harness.js";
import { freePort } from "../support/ports.js";

/**
 * When the identity provider's key set cannot be fetched, a request is refused with 503
 * `service_unavailable` and Retry-After — not 401, which would tell the client its (good) token is
 * bad and send it back through sign-in.
 */
describe("the IdP's JWKS is unreachable", () => {
  let h: Harness;

  beforeAll(async () => {
    const port = await freePort(); // nothing listens there
    h = await startHarness({
      tenants: [], // the harness would connect a client per tenant, which needs the keys
      config: { auth: { jwks_uri: `http://127.0.0.1:${port}/.well-known/jwks.json`, jwks_cooldown_s: 0 } },
    });
  });
  afterAll(() => h.close());

  it("answers 503 service_unavailable with Retry-After, and keeps serving", async () => {
    const token = await h.token("acme");
    for (let i = 0; i < 3; i++) {
      const res = await fetch(h.mcpUrl, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          authorization: `Bearer ${token}`,
        },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
      });
      expect(res.status).toBe(503);
      expect(res.headers.get("retry-after")).toBe("5");
      expect(res.headers.get("www-authenticate")).toBeNull();
      expect(await res.json()).toMatchObject({ error: "service_unavailable" });
    }
    // A request without a token is still a 401: that one is the client's to fix.
    const anonymous = await fetch(h.mcpUrl, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    expect(anonymous.status).toBe(401);
  });
});
