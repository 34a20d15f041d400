/**
 * A runnable multi-tenant MCP server with one tool of your own next to the demo tools.
 *
 *   npx tenantry init --oauth auth0 --multi-tenant   # then edit tenantry.toml
 *   npx tenantry migrate && npx tsx examples/documents-server.ts
 */
import { z } from "zod";
import { createTenantry, defineTool, installSignalHandlers } from "../src/index.js";
import { demoMigrations, demoTools } from "../src/tools/demo/index.js";

const app = await createTenantry({ configPath: process.env.TENANTRY_CONFIG ?? "tenantry.toml" });

for (const tool of demoTools) app.tool(tool);
app.migrations(demoMigrations);

app.tool(
  defineTool({
    name: "documents_count",
    description: "How many documents this organization has under a prefix",
    input: z.object({ prefix: z.string().max(512).optional() }),
    requiredScopes: ["documents:read"],
    async run(input, ctx) {
      let count = 0;
      let cursor: string | undefined;
      do {
        const page = await ctx.storage.list(input.prefix ?? "", {
          limit: 1000,
          ...(cursor ? { cursor } : {}),
        });
        count += page.keys.length;
        cursor = page.nextCursor;
      } while (cursor);
      ctx.log.info({ tenant_id: ctx.tenant.tenantId, count }, "counted documents");
      return { tenant: ctx.tenant.tenantId, count };
    },
  }),
);

installSignalHandlers(app);
const { url } = await app.listen();
console.error(`listening on ${url}/mcp`);
