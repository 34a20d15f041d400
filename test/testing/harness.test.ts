/** `tenantry/testing`'s harness as a user's test suite meets it. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/harness.js";
import { whoami } from "../../src/tools/demo/whoami.js";

describe("startHarness", () => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness({
      tenants: [{ id: "acme" }, { id: "idle", status: "suspended" }],
      tools: [whoami],
    });
  });
  afterAll(() => h.close());

  it("a suspended tenant has a token but no client, and reading its client says why instead of giving undefined", async () => {
    const idle = h.tenant("idle");
    expect(idle.token).toEqual(expect.any(String));
    expect(() => idle.client).toThrow(/idle.*suspended/);
    expect(h.tenants.map((t) => ({ ...t }))).toEqual([
      expect.objectContaining({ id: "acme" }),
      { id: "idle", token: idle.token },
    ]);
    // Its token is refused as the contract says; the active tenant's client works.
    const refused = await fetch(h.mcpUrl, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${idle.token}` },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
    });
    expect(refused.status).toBe(403);
    expect(await refused.json()).toMatchObject({ error: "tenant_suspended" });
    const result = await h.tenant("acme").client.callTool({ name: "whoami", arguments: {} });
    expect(result.structuredContent).toMatchObject({ tenantId: "acme" });
  });

  it("close() may be called more than once (a test that closes its harness, then afterAll)", async () => {
    const other = await startHarness({ tenants: 0 });
    await other.close();
    await expect(other.close()).resolves.toBeUndefined();
  });
});
