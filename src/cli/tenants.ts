import type { Command } from "commander";
import { TenantryError } from "../errors.js";
import { newTenantFromJson, tenantUpdateFromJson } from "../server/admin-routes.js";
import { type FeatureFlagValue, tenantToJson } from "../tenancy/tenant.js";
import { assertTenantId } from "../tenancy/tenant-id.js";
import { run, withAdminAccess } from "./admin-client.js";
import { type ConfigOptions, positiveInt, resolveCliConfig } from "./context.js";
import { print, printTenants } from "./output.js";

type TenantJson = Record<string, unknown>;

/** `--feature k=v` (repeatable): `true`/`false` become booleans, numbers stay strings unless numeric. */
export function parseFeature(value: string, previous: Record<string, FeatureFlagValue> = {}) {
  const eq = value.indexOf("=");
  const key = eq === -1 ? value : value.slice(0, eq);
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(key)) {
    throw new TenantryError("invalid_argument", `--feature expects key=value, got ${JSON.stringify(value)}`);
  }
  const raw = eq === -1 ? "true" : value.slice(eq + 1);
  const parsed: FeatureFlagValue =
    raw === "true" ? true : raw === "false" ? false : /^-?[0-9]+(\.[0-9]+)?$/.test(raw) ? Number(raw) : raw;
  return { ...previous, [key]: parsed };
}

export function parseToolList(value: string): string[] {
  const names = value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  for (const n of names) {
    if (!/^[A-Za-z0-9_.-]{1,128}$/.test(n))
      throw new TenantryError("invalid_argument", `invalid tool name ${JSON.stringify(n)}`);
  }
  return names;
}

const id = (value: string) => assertTenantId(value);

interface CreateFlags extends ConfigOptions {
  name: string;
  rateLimit?: string;
  allowedTools?: string;
  feature?: Record<string, FeatureFlagValue>;
  trialDays?: string;
  json?: boolean;
}

interface UpdateFlags extends ConfigOptions {
  name?: string;
  rateLimit?: string;
  allowedTools?: string;
  feature?: Record<string, FeatureFlagValue>;
  convertTrial?: boolean;
  json?: boolean;
}

/** `tenantry tenants …`: thin wrappers over TenantService, local or through the running server. */
export function registerTenantCommands(program: Command): Command {
  const tenants = program.command("tenants").description("provision and operate tenants");
  const withConfig = (c: Command) =>
    c
      .option("--config <file>", "tenantry.toml to use")
      .option("--data-dir <dir>", "data directory of `tenantry dev`");

  withConfig(
    tenants
      .command("create <id>")
      .description("provision a tenant")
      .requiredOption("--name <name>", "display name")
      .option("--rate-limit <n>", "requests per minute (default: [auth.multi_tenant] default_rate_limit)")
      .option("--allowed-tools <a,b>", "tools this tenant may use (default: all)")
      .option("--feature <k=v>", "feature flag (repeatable)", parseFeature)
      .option("--trial-days <n>", "start a trial that ends after N days")
      .option("--json", "print JSON"),
  ).action(async (tenantId: string, o: CreateFlags) => {
    const body = {
      id: id(tenantId),
      name: o.name,
      ...(o.rateLimit !== undefined ? { rate_limit: positiveInt(o.rateLimit, "--rate-limit") } : {}),
      ...(o.allowedTools !== undefined ? { allowed_tools: parseToolList(o.allowedTools) } : {}),
      ...(o.feature ? { feature_flags: o.feature } : {}),
      ...(o.trialDays !== undefined ? { trial_days: positiveInt(o.trialDays, "--trial-days") } : {}),
    };
    const config = await resolveCliConfig(o);
    const out = await withAdminAccess(config, (a) =>
      run(
        a,
        (call) => call("POST", "/tenants", body),
        async (d) => tenantToJson(await d.app.tenants.create(d.actor, newTenantFromJson(body))),
      ),
    );
    print(out, o.json, (t) => `created tenant ${(t as TenantJson).id} (${(t as TenantJson).status})`);
  });

  withConfig(
    tenants
      .command("list")
      .description("list tenants")
      .option("--status <s>", "only this status")
      .option("--json", "print JSON"),
  ).action(async (o: ConfigOptions & { status?: string; json?: boolean }) => {
    const config = await resolveCliConfig(o);
    const list = (await withAdminAccess(config, (a) =>
      run(
        a,
        async (call) =>
          (
            (await call("GET", `/tenants${o.status ? `?status=${encodeURIComponent(o.status)}` : ""}`)) as {
              tenants: TenantJson[];
            }
          ).tenants,
        async (d) =>
          (await d.app.tenants.list(o.status ? { status: o.status as never } : {})).map(tenantToJson),
      ),
    )) as TenantJson[];
    if (o.json) print({ tenants: list }, true);
    else printTenants(list);
  });

  withConfig(
    tenants.command("show <id>").description("show one tenant").option("--json", "print JSON"),
  ).action(async (tenantId: string, o: ConfigOptions & { json?: boolean }) => {
    const config = await resolveCliConfig(o);
    const t = await withAdminAccess(config, (a) =>
      run(
        a,
        (call) => call("GET", `/tenants/${id(tenantId)}`),
        async (d) => tenantToJson(await d.app.tenants.show(id(tenantId))),
      ),
    );
    print(t, o.json, (x) => JSON.stringify(x, null, 2));
  });

  withConfig(
    tenants
      .command("update <id>")
      .description("change a tenant's name, rate limit, tools or feature flags")
      .option("--name <name>", "display name")
      .option("--rate-limit <n>", "requests per minute")
      .option("--allowed-tools <a,b>", "tools this tenant may use (empty string: all)")
      .option("--feature <k=v>", "feature flag (repeatable; merged)", parseFeature)
      .option("--convert-trial", "end the trial: the tenant becomes active")
      .option("--json", "print JSON"),
  ).action(async (tenantId: string, o: UpdateFlags) => {
    const body = {
      ...(o.name !== undefined ? { name: o.name } : {}),
      ...(o.rateLimit !== undefined ? { rate_limit: positiveInt(o.rateLimit, "--rate-limit") } : {}),
      ...(o.allowedTools !== undefined ? { allowed_tools: parseToolList(o.allowedTools) } : {}),
      ...(o.feature ? { feature_flags: o.feature } : {}),
      ...(o.convertTrial ? { convert_trial: true } : {}),
    };
    if (Object.keys(body).length === 0) throw new TenantryError("invalid_argument", "nothing to update");
    const config = await resolveCliConfig(o);
    const t = await withAdminAccess(config, (a) =>
      run(
        a,
        (call) => call("PATCH", `/tenants/${id(tenantId)}`, body),
        async (d) =>
          tenantToJson(await d.app.tenants.update(d.actor, id(tenantId), tenantUpdateFromJson(body))),
      ),
    );
    print(t, o.json, (x) => `updated tenant ${(x as TenantJson).id}`);
  });

  for (const [verb, help] of [
    ["suspend", "refuse every request of a tenant, at once, on every replica"],
    ["resume", "serve a suspended tenant again"],
  ] as const) {
    withConfig(tenants.command(`${verb} <id>`).description(help).option("--json", "print JSON")).action(
      async (tenantId: string, o: ConfigOptions & { json?: boolean }) => {
        const config = await resolveCliConfig(o);
        const t = await withAdminAccess(config, (a) =>
          run(
            a,
            (call) => call("POST", `/tenants/${id(tenantId)}/${verb}`, {}),
            async (d) =>
              tenantToJson(
                verb === "suspend"
                  ? await d.app.tenants.suspend(d.actor, id(tenantId))
                  : await d.app.tenants.resume(d.actor, id(tenantId)),
              ),
          ),
        );
        print(t, o.json, (x) => `tenant ${(x as TenantJson).id} is ${(x as TenantJson).status}`);
      },
    );
  }
  return tenants;
}
