import type { Command } from "commander";
import { type DoctorReport, runDoctor } from "../admin/doctor.js";
import { loadConfig } from "../config/load.js";
import { readControlFile } from "../server/control-file.js";
import { withAdminAccess } from "./admin-client.js";
import { DEFAULT_CONFIG } from "./context.js";
import { print } from "./output.js";

export function registerDoctor(program: Command): void {
  program
    .command("doctor")
    .description("check the deployment: database roles, row-level security, JWKS, config")
    .option("--config <file>", "tenantry.toml to use", DEFAULT_CONFIG)
    .option("--json", "print JSON")
    .action(async (o: { config: string; json?: boolean }) => {
      const config = await loadConfig(o.config);
      // The embedded database belongs to the running server, if any: ask it.
      const running = config.database.url ? undefined : await readControlFile(config.database.data_dir);
      const report = running
        ? ((await withAdminAccess(config, (a) =>
            a.mode === "remote" ? a.call("GET", "/doctor") : runDoctor(config),
          )) as DoctorReport)
        : await runDoctor(config);
      print(report, o.json, () =>
        report.checks.map((c) => `${c.ok ? "ok  " : "FAIL"}  ${c.name}: ${c.detail}`).join("\n"),
      );
      if (!report.ok) process.exitCode = 1;
    });
}
