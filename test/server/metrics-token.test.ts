/**
 * `/metrics` labels its rate-limit counters with tenant ids: open, it lists every active customer
 * to whoever can reach the port. With `[server] metrics_token` only a scraper holding the token
 * reads it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { type Harness, startHarness } from "../../src/testing/harness.js";

const TOKEN = "scrape-secret-0123456789";

describe("[server] metrics_token", () => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness({ tenants: [{ id: "acme" }], config: { server: { metrics_token: TOKEN } } });
    // acme made requests (the harness client's initialize): its tenant id is in the counters.
  });
  afterAll(() => h.close());

  it("refuses a scrape without the token, or with another one, with 401 invalid_token and no tenant ids", async () => {
    for (const authorization of [
      undefined,
      `Bearer ${TOKEN}x`,
      `Bearer ${TOKEN.slice(0, -1)}`,
      TOKEN,
      "Bearer ",
    ]) {
      const res = await fetch(`${h.url}/metrics`, authorization ? { headers: { authorization } } : {});
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toBe('Bearer realm="metrics", error="invalid_token"');
      const text = await res.text();
      expect(JSON.parse(text)).toEqual({
        error: "invalid_token",
        message: "/metrics needs the metrics token",
      });
      expect(text).not.toContain("acme");
    }
    // A tenant's own MCP token is not the metrics token either.
    const tenantToken = await h.token("acme");
    expect(
      (await fetch(`${h.url}/metrics`, { headers: { authorization: `Bearer ${tenantToken}` } })).status,
    ).toBe(401);
  });

  it("serves the metrics to a scrape presenting the token", async () => {
    const res = await fetch(`${h.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('tenantry_rate_limit_allowed_total{tenant="acme"}');
  });

  it("leaves the other open endpoints open", async () => {
    expect((await fetch(`${h.url}/healthz`)).status).toBe(200);
  });

  it("refuses a token shorter than 16 characters at load, naming the key", () => {
    expect(() => parseConfig({ server: { metrics_token: "short" } }, "tenantry.toml", {})).toThrow(
      /metrics_token must be at least 16 characters/,
    );
  });
});
