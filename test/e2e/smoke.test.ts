import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../../src/testing/index.js";
import { whoami } from "../../src/tools/demo/whoami.js";

describe("smoke", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ tenants: 2, tools: [whoami] });
  });
  afterAll(async () => h?.close());

  it("whoami per tenant", async () => {
    for (const t of h.tenants) {
      const r = await t.client.callTool({ name: "whoami", arguments: {} });
      expect(r.structuredContent).toMatchObject({ tenantId: t.id });
    }
  });
});
