import type { Command } from "commander";
import { loadConfig } from "../config/load.js";
import { TenantryApp } from "../server/app.js";
import { demoMigrations } from "../tools/demo/index.js";
import { DEFAULT_CONFIG } from "./context.js";
import { print } from "./output.js";

export function registerMigrate(program: Command): void {
  program
    .command("migrate")
    .description("apply core and tenant migrations, and grant the runtime role what it needs")
    .option("--config <file>", "tenantry.toml to use", DEFAULT_CONFIG)
    .option("--no-demo-tools", "do not include the demo tools' tables")
    .option("--json", "print JSON")
    .action(async (o: { config: string; demoTools: boolean; json?: boolean }) => {
      const config = await loadConfig(o.config);
      const app = new TenantryApp(config, { logger: false, controlFile: false });
      if (o.demoTools) app.migrations(demoMigrations);
      try {
        await app.start({ safetyCheck: false });
        const report = await app.isolation.migrateAll();
        const failed = report.tenants.filter((t) => !t.ok);
        print(report, o.json, () =>
          [
            `migrations applied (${config.auth.multi_tenant.isolation}); shared: ${report.shared.length ? report.shared.join(", ") : "up to date"}`,
            `tenant schemas: ${report.tenants.length - failed.length} ok, ${failed.length} failed`,
            ...failed.map((t) => `  ${t.id}: ${t.error}`),
          ].join("\n"),
        );
        if (failed.length > 0) process.exitCode = 1;
        // What migrate cannot repair (a superuser runtime role, say) is refused here, exit 1.
        await app.isolation.checkSafety();
      } finally {
        await app.close();
      }
    });
}
