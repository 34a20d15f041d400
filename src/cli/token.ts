import type { Command } from "commander";
import { loadOrCreateDevKeys, mintDevToken, parseDuration } from "../auth/dev-issuer.js";
import type { TenantryConfig } from "../config/resolve.js";
import { TenantryError } from "../errors.js";
import { assertTenantId } from "../tenancy/tenant-id.js";
import { resolveCliConfig } from "./context.js";

export interface TokenRequest {
  tenant?: string;
  sub?: string;
  scopes?: string[];
  admin?: boolean;
  ttl?: string;
}

/** Mints a dev-issuer token for `config` (dev provider only). Shared by `tenantry token` and `tenantry dev`. */
export async function mintForConfig(config: TenantryConfig, r: TokenRequest): Promise<string> {
  const auth = config.resolvedAuth;
  if (auth.provider !== "dev") {
    throw new TenantryError(
      "invalid_argument",
      "tenantry token mints tokens for the dev provider only; get real tokens from your IdP",
    );
  }
  if (!r.admin && r.tenant === undefined)
    throw new TenantryError("invalid_argument", "--tenant is required (or --admin)");
  const keys = await loadOrCreateDevKeys(config.database.data_dir);
  const scopes = [...(r.scopes ?? []), ...(r.admin ? [auth.adminScope] : [])];
  return mintDevToken(keys, {
    issuer: auth.issuers[0]!,
    audience: config.resourceUrl,
    ...(r.tenant !== undefined ? { tenantId: assertTenantId(r.tenant) } : {}),
    sub: r.sub ?? (r.admin ? "dev-admin" : `dev-user@${r.tenant}`),
    scopes,
    ttlSeconds: parseDuration(r.ttl ?? "1h"),
  });
}

export function registerToken(program: Command): void {
  program
    .command("token")
    .description("mint a token from the dev issuer (dev provider only)")
    .option("--tenant <id>", "tenant the token belongs to")
    .option("--sub <subject>", "user id")
    .option("--scopes <list>", 'space-separated scopes, e.g. "notes:read notes:write"')
    .option("--admin", "add the global admin scope")
    .option("--ttl <duration>", "lifetime: 30m, 1h, 2d", "1h")
    .option("--config <file>", "tenantry.toml to use")
    .option("--data-dir <dir>", "data directory of `tenantry dev`")
    .action(
      async (o: {
        tenant?: string;
        sub?: string;
        scopes?: string;
        admin?: boolean;
        ttl: string;
        config?: string;
        dataDir?: string;
      }) => {
        const config = await resolveCliConfig(o);
        const token = await mintForConfig(config, {
          ...(o.tenant !== undefined ? { tenant: o.tenant } : {}),
          ...(o.sub !== undefined ? { sub: o.sub } : {}),
          scopes: (o.scopes ?? "").split(/\s+/).filter(Boolean),
          admin: o.admin === true,
          ttl: o.ttl,
        });
        process.stdout.write(`${token}\n`);
      },
    );
}
