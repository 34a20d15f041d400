import { Command, CommanderError } from "commander";
import { TenantryError } from "../errors.js";
import { VERSION } from "../server/app.js";
import { registerAudit } from "./audit.js";
import { registerDev } from "./dev.js";
import { registerDoctor } from "./doctor.js";
import { registerInit } from "./init.js";
import { registerLifecycleCommands } from "./lifecycle.js";
import { registerMigrate } from "./migrate.js";
import { registerServe } from "./serve.js";
import { registerTenantCommands } from "./tenants.js";
import { registerToken } from "./token.js";

/** Errors that mean "you asked for something wrong": one line on stderr, exit code 2. */
const BAD_INPUT = new Set([
  "config_invalid",
  "config_exists",
  "invalid_argument",
  "invalid_tenant_id",
  "unknown_tenant",
  "tenant_exists",
  "tenant_conflict",
  "invalid_storage_key",
]);

export function buildProgram(): Command {
  const program = new Command("tenantry")
    .description("One MCP server deployment, many organizations.")
    .version(VERSION)
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(text) })
    .showHelpAfterError(false);
  registerInit(program);
  registerDev(program);
  registerServe(program);
  registerMigrate(program);
  registerLifecycleCommands(registerTenantCommands(program));
  registerAudit(program);
  registerToken(program);
  registerDoctor(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === "commander.helpDisplayed" || error.code === "commander.version") return 0;
      return 2; // commander already printed one line
    }
    if (error instanceof TenantryError) {
      process.stderr.write(`tenantry: ${error.message}\n`);
      return BAD_INPUT.has(error.code) ? 2 : 1;
    }
    process.stderr.write(`tenantry: ${(error as Error)?.message ?? String(error)}\n`);
    return 1;
  }
}
