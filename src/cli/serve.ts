import type { Command } from "commander";
import { loadConfig } from "../config/load.js";
import { TenantryApp } from "../server/app.js";
import { installSignalHandlers } from "../server/signals.js";
import { demoMigrations, demoTools } from "../tools/demo/index.js";
import { DEFAULT_CONFIG, portNumber } from "./context.js";

export function registerServe(program: Command): void {
  program
    .command("serve")
    .description("run the production server from tenantry.toml")
    .option("--config <file>", "tenantry.toml to use", DEFAULT_CONFIG)
    .option("--port <port>", "override [server] port")
    .option("--no-demo-tools", "do not serve the demo tools")
    .action(async (o: { config: string; port?: string; demoTools: boolean }) => {
      const port = o.port !== undefined ? portNumber(o.port) : undefined;
      const config = await loadConfig(o.config);
      const app = new TenantryApp(config, {});
      if (o.demoTools) {
        for (const tool of demoTools) app.tool(tool);
        app.migrations(demoMigrations);
      }
      installSignalHandlers(app);
      await app.listen(port !== undefined ? { port } : {});
    });
}
