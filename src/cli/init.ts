import type { Command } from "commander";
import { writeInitConfig } from "../config/init-template.js";
import { ISOLATIONS, PROVIDERS } from "../config/schema.js";
import { TenantryError } from "../errors.js";
import { DEFAULT_CONFIG, positiveInt } from "./context.js";

interface InitFlags {
  oauth: string;
  multiTenant?: boolean;
  isolation?: string;
  tenantClaim?: string;
  rateLimit?: string;
  force?: boolean;
  config?: string;
}

function oneOf<T extends string>(value: string, allowed: readonly T[], flag: string): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new TenantryError(
      "invalid_argument",
      `${flag} must be one of ${allowed.join(", ")}; got ${JSON.stringify(value)}`,
    );
  }
  return value as T;
}

export function registerInit(program: Command): void {
  program
    .command("init")
    .description("write a commented tenantry.toml for your identity provider")
    .option("--oauth <provider>", `identity provider: ${PROVIDERS.join(" | ")}`, "dev")
    .option("--multi-tenant", "serve many organizations (tenant from a token claim)")
    .option("--isolation <strategy>", `data isolation: ${ISOLATIONS.join(" | ")}`)
    .option("--tenant-claim <claim>", "claim naming the tenant (default per provider)")
    .option("--rate-limit <n>", "default requests per minute per tenant")
    .option("--force", "overwrite an existing file")
    .option("--config <file>", "where to write", DEFAULT_CONFIG)
    .action(async (o: InitFlags) => {
      const provider = oneOf(o.oauth, PROVIDERS, "--oauth");
      const path = o.config ?? DEFAULT_CONFIG;
      await writeInitConfig(
        path,
        {
          provider,
          multiTenant: o.multiTenant === true,
          ...(o.isolation !== undefined ? { isolation: oneOf(o.isolation, ISOLATIONS, "--isolation") } : {}),
          ...(o.tenantClaim !== undefined ? { tenantClaim: o.tenantClaim } : {}),
          ...(o.rateLimit !== undefined ? { rateLimit: positiveInt(o.rateLimit, "--rate-limit") } : {}),
        },
        { force: o.force === true },
      );
      process.stdout.write(`wrote ${path} (provider ${provider}${o.multiTenant ? ", multi-tenant" : ""})\n`);
      process.stdout.write("next: edit it, then `tenantry migrate` and `tenantry serve`\n");
    });
}
