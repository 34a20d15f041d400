import type { Command } from "commander";
import { pino } from "pino";
import { isTenantryError, TenantryError } from "../errors.js";
import { TenantryApp } from "../server/app.js";
import { installSignalHandlers } from "../server/signals.js";
import { demoMigrations, demoTools } from "../tools/demo/index.js";
import { DEFAULT_DEV_DIR, devConfig, portNumber } from "./context.js";
import { mintForConfig } from "./token.js";

const DEMO_TENANTS = [
  { id: "acme", name: "Acme Corporation" },
  { id: "globex", name: "Globex Corporation" },
];

const step = (text: string) => process.stderr.write(`• ${text}`);
const done = (started: number) =>
  process.stderr.write(` done (${Math.round(performance.now() - started)} ms)\n`);

export function registerDev(program: Command): void {
  program
    .command("dev")
    .description("run the embedded default: dev issuer, embedded PostgreSQL, demo tools and tenants")
    .option("--port <port>", "port to listen on", "8080")
    .option("--data-dir <dir>", "where data is kept", DEFAULT_DEV_DIR)
    .action(async (o: { port: string; dataDir: string }) => {
      const port = portNumber(o.port);
      const config = devConfig({ dataDir: o.dataDir, port });
      // Requests are not logged one by one in dev: the banner and warnings are what a developer reads.
      const app = new TenantryApp(config, {
        logger: pino({ level: process.env.TENANTRY_LOG_LEVEL ?? "warn" }, pino.destination(2)),
      });
      for (const tool of demoTools) app.tool(tool);
      app.migrations(demoMigrations);

      let t = performance.now();
      step(`opening the embedded database in ${config.database.data_dir} (the first start initialises it)…`);
      try {
        await app.start();
      } catch (error) {
        process.stderr.write(" failed\n"); // the error follows on its own line
        await app.close();
        throw error;
      }
      done(t);

      t = performance.now();
      step("demo tenants acme and globex…");
      for (const tenant of DEMO_TENANTS) {
        try {
          await app.tenants.create({ id: "tenantry-dev" }, tenant);
        } catch (error) {
          if (!isTenantryError(error, "tenant_exists")) throw error;
        }
      }
      done(t);

      installSignalHandlers(app);
      let url: string;
      try {
        ({ url } = await app.listen({ port }));
      } catch (error) {
        await app.close();
        if ((error as NodeJS.ErrnoException).code === "EADDRINUSE") {
          throw new TenantryError("invalid_argument", `port ${port} is in use; pass --port`);
        }
        throw error;
      }
      const mcpUrl = `${config.baseUrl}/mcp`;
      const lines = [`\nTenantry dev server: ${mcpUrl}  (listening on ${url})\n`];
      const tokens = new Map<string, string>();
      for (const tenant of DEMO_TENANTS) {
        const token = await mintForConfig(config, { tenant: tenant.id, ttl: "24h" });
        tokens.set(tenant.id, token);
        lines.push(`${tenant.id} token (24 h):\n  ${token}\n`);
      }
      const acme = tokens.get("acme")!;
      lines.push(
        "Client config (paste into an MCP client that speaks Streamable HTTP):",
        JSON.stringify(
          {
            mcpServers: {
              "tenantry-acme": { type: "http", url: mcpUrl, headers: { Authorization: `Bearer ${acme}` } },
            },
          },
          null,
          2,
        ),
        "",
        "MCP Inspector: npx @modelcontextprotocol/inspector  → Transport: Streamable HTTP,",
        `  URL: ${mcpUrl}, Authentication → Header "Authorization": "Bearer <token above>"`,
        "",
        "More tokens: tenantry token --tenant acme   ·   admin: tenantry token --admin",
        "Tenants:     tenantry tenants list           ·   stop with Ctrl-C (data is kept)",
        "",
      );
      process.stderr.write(`${lines.join("\n")}\n`);
    });
}
