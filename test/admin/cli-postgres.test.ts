import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { main } from "../../src/cli/program.js";
import { mintForConfig } from "../../src/cli/token.js";
import { loadConfig } from "../../src/config/load.js";
import { TenantryApp } from "../../src/server/app.js";
import { demoMigrations, demoTools } from "../../src/tools/demo/index.js";
import { createTestDatabase, type TestDatabase } from "../support/postgres.js";
import { serviceGate } from "../support/services.js";
import { mcp, toolResult } from "./helpers.js";

const pgUp = await serviceGate("postgres");

async function cli(...args: string[]): Promise<{ code: number; stderr: string }> {
  let stderr = "";
  const out = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
  const err = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => {
    stderr += String(chunk);
    return true;
  });
  try {
    return { code: await main(["node", "tenantry", ...args]), stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
    process.exitCode = undefined;
  }
}

/**
 * With PostgreSQL the CLI opens the database itself. Under schema_per_tenant, a tenant it
 * provisions must get the tables `tenantry serve` serves (the same ones `tenantry migrate` puts in
 * every tenant schema), or the tenant is `active` and every tool that touches the database fails.
 */
describe.skipIf(!pgUp)("CLI on PostgreSQL, schema_per_tenant: tenants it provisions are usable", () => {
  let db: TestDatabase;
  let dir: string;
  let file: string;
  beforeAll(async () => {
    db = await createTestDatabase();
    dir = await mkdtemp(join(tmpdir(), "tenantry-cli-pg-"));
    file = join(dir, "tenantry.toml");
    await writeFile(
      file,
      [
        "[server]",
        "port = 18999",
        "[auth.multi_tenant]",
        'isolation = "schema_per_tenant"',
        "[database]",
        `url = "${db.runtimeUrl}"`,
        `admin_url = "${db.adminUrl}"`,
        `data_dir = "${join(dir, "data")}"`,
        "[storage]",
        `root = "${join(dir, "objects")}"`,
        "[lifecycle]",
        `archive_dir = "${join(dir, "archive")}"`,
        "",
      ].join("\n"),
    );
  }, 60_000);
  afterAll(async () => {
    await db?.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it("tenants create, then serve: the tenant's tools work", async () => {
    expect(await cli("migrate", "--config", file)).toMatchObject({ code: 0 });
    expect(await cli("tenants", "create", "acme", "--name", "Acme", "--config", file)).toMatchObject({
      code: 0,
    });

    const config = await loadConfig(file);
    const app = new TenantryApp(config, { logger: false, controlFile: false });
    for (const tool of demoTools) app.tool(tool);
    app.migrations(demoMigrations);
    const { url } = await app.listen({ port: 0, host: "127.0.0.1" });
    try {
      const token = await mintForConfig(config, { tenant: "acme" });
      const created = toolResult<{ note: { title: string } }>(
        await mcp({ mcpUrl: `${url}/mcp` }, token, "tools/call", {
          name: "notes_create",
          arguments: { title: "first", body: "b" },
        }),
      );
      expect(created.note.title).toBe("first");
    } finally {
      await app.close();
    }
  }, 120_000);
});
