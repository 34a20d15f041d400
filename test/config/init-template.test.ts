import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseToml } from "smol-toml";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type InitOptions, renderInitConfig, writeInitConfig } from "../../src/config/init-template.js";
import { loadConfig, parseConfig } from "../../src/config/load.js";
import type { Provider, ResolvedAuth } from "../../src/config/resolve.js";
import { ISOLATIONS, PROVIDERS } from "../../src/config/schema.js";
import { isTenantryError } from "../../src/errors.js";

/** What each provider's template must resolve to: the example values a user is told to change. */
const EXPECTED: Record<Provider, Pick<ResolvedAuth, "issuers" | "audiences" | "tenantClaim" | "clientId">> = {
  auth0: {
    issuers: ["https://your-tenant.auth0.com/"],
    audiences: ["https://mcp.example.com"],
    tenantClaim: "org_id",
    clientId: undefined,
  },
  entra: {
    issuers: ["https://login.microsoftonline.com/{tid}/v2.0", "https://sts.windows.net/{tid}/"],
    audiences: ["api://00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000"],
    tenantClaim: "tid",
    clientId: undefined,
  },
  cognito: {
    issuers: ["https://cognito-idp.us-east-1.amazonaws.com/us-east-1_EXAMPLE"],
    audiences: [],
    tenantClaim: "custom:tenant_id",
    clientId: "your-app-client-id",
  },
  okta: {
    issuers: ["https://your-org.okta.com/oauth2/default"],
    audiences: ["api://default"],
    tenantClaim: "tenant_id",
    clientId: undefined,
  },
  oidc: {
    issuers: ["https://idp.example.com"],
    audiences: ["https://mcp.example.com"],
    tenantClaim: "tenant_id",
    clientId: undefined,
  },
  dev: {
    issuers: ["http://localhost:8080/dev-issuer"],
    audiences: ["http://localhost:8080", "http://localhost:8080/mcp"],
    tenantClaim: "org_id",
    clientId: undefined,
  },
};

function validate(options: InitOptions) {
  // An empty environment: the template must not depend on any variable being set.
  return parseConfig(parseToml(renderInitConfig(options)), "tenantry.toml", {});
}

describe("renderInitConfig", () => {
  const isolations = [undefined, ...ISOLATIONS];
  const cases = PROVIDERS.flatMap((provider) =>
    [false, true].flatMap((multiTenant) =>
      isolations.map((isolation) => ({ provider, multiTenant, isolation })),
    ),
  );

  it.each(cases)("$provider, multiTenant=$multiTenant, isolation=$isolation validates", (options) => {
    const config = validate(options);
    const auth = config.resolvedAuth;
    expect(auth).toMatchObject({ ...EXPECTED[options.provider], provider: options.provider, enabled: true });
    expect(auth.multiTenant).toBe(options.multiTenant);
    expect(config.auth.multi_tenant.default_rate_limit).toBe(100);
    if (options.multiTenant) {
      expect(config.auth.multi_tenant.isolation).toBe(options.isolation ?? "row_level_security");
      expect(auth.adminScope).toBe("admin:global");
    }
    expect(config.baseUrl).toBe("http://localhost:8080");
    expect(config.database.url).toBeUndefined(); // embedded PGlite by default
    expect(config.storage.backend).toBe("fs");
    expect(config.rate_limit.backend).toBe("memory");
  });

  it.each(PROVIDERS)("%s: writes every section, and the multi-tenant table only as asked", (provider) => {
    const multi = renderInitConfig({ provider, multiTenant: true });
    const single = renderInitConfig({ provider, multiTenant: false });
    for (const section of ["server", "auth", "database", "storage", "rate_limit", "audit", "lifecycle"]) {
      expect(multi).toContain(`\n[${section}]\n`);
      expect(single).toContain(`\n[${section}]\n`);
    }
    expect(parseToml(multi)).toMatchObject({ auth: { multi_tenant: { enabled: true } } });
    // Multi-tenancy defaults to on, so single-tenant must say so rather than omit the table.
    expect(parseToml(single)).toMatchObject({ auth: { multi_tenant: { enabled: false } } });
    expect(single).not.toMatch(/^tenant_claim/m);
    expect(single).not.toMatch(/^isolation/m);
  });

  it.each(PROVIDERS)("%s: every key is explained by a comment above it", (provider) => {
    const lines = renderInitConfig({ provider, multiTenant: true }).split("\n");
    lines.forEach((line, i) => {
      if (!/^[a-z_]+ = /.test(line)) return;
      let j = i - 1;
      while (j >= 0 && /^[a-z_]+ = /.test(lines[j]!)) j--;
      expect(lines[j], `key on line ${i + 1}: ${line}`).toMatch(/^#/);
    });
  });

  it("uses a given tenant claim, escaped as a TOML string", () => {
    const tenantClaim = 'https://example.com/claims"org\\id\u007f';
    for (const provider of PROVIDERS) {
      expect(validate({ provider, multiTenant: true, tenantClaim }).resolvedAuth.tenantClaim).toBe(
        tenantClaim,
      );
    }
  });

  it("uses a given rate limit", () => {
    expect(
      validate({ provider: "auth0", multiTenant: true, rateLimit: 250 }).auth.multi_tenant,
    ).toMatchObject({
      default_rate_limit: 250,
    });
    expect(
      validate({ provider: "dev", multiTenant: false, rateLimit: 7 }).auth.multi_tenant.default_rate_limit,
    ).toBe(7);
  });

  it.each([0, -1, 1.5, Number.NaN])("refuses rate limit %s", (rateLimit) => {
    expect(() => renderInitConfig({ provider: "dev", multiTenant: true, rateLimit })).toThrow(
      expect.objectContaining({ code: "invalid_argument" }),
    );
  });

  it("refuses an empty tenant claim", () => {
    expect(() => renderInitConfig({ provider: "dev", multiTenant: true, tenantClaim: " " })).toThrow(
      expect.objectContaining({ code: "invalid_argument" }),
    );
  });
});

describe("writeInitConfig", () => {
  let dir: string;
  let path: string;
  const options: InitOptions = { provider: "auth0", multiTenant: true };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "tenantry-init-"));
    path = join(dir, "tenantry.toml");
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("writes a file that loadConfig accepts", async () => {
    await writeInitConfig(path, options);
    expect(await readFile(path, "utf8")).toBe(renderInitConfig(options));
    const config = await loadConfig(path, {});
    expect(config.source).toBe(path);
    expect(config.resolvedAuth.issuers).toEqual(EXPECTED.auth0.issuers);
  });

  it("creates missing parent directories", async () => {
    const nested = join(dir, "a", "b", "tenantry.toml");
    await writeInitConfig(nested, options);
    await expect(loadConfig(nested, {})).resolves.toBeDefined();
  });

  it("refuses to overwrite without force and leaves the file untouched", async () => {
    await writeFile(path, "# mine\n");
    const error = await writeInitConfig(path, options).catch((e: unknown) => e);
    expect(isTenantryError(error, "config_exists")).toBe(true);
    expect((error as Error).message).toBe(`${path} exists; pass --force to overwrite`);
    await expect(writeInitConfig(path, options, { force: false })).rejects.toMatchObject({
      code: "config_exists",
    });
    expect(await readFile(path, "utf8")).toBe("# mine\n");
  });

  it("overwrites with force", async () => {
    await writeFile(path, "# mine\n");
    await writeInitConfig(path, { provider: "dev", multiTenant: false }, { force: true });
    expect(await readFile(path, "utf8")).toBe(renderInitConfig({ provider: "dev", multiTenant: false }));
  });

  it("lets exactly one of two racing writers create the file", async () => {
    const results = await Promise.allSettled(
      (["auth0", "okta"] as const).map((provider) => writeInitConfig(path, { provider, multiTenant: true })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const [rejected] = results.filter((r) => r.status === "rejected");
    expect(rejected?.reason).toMatchObject({ code: "config_exists" });
    await expect(loadConfig(path, {})).resolves.toBeDefined();
  });

  it("refuses invalid options before touching the disk", async () => {
    await expect(writeInitConfig(path, { ...options, rateLimit: 0 })).rejects.toMatchObject({
      code: "invalid_argument",
    });
    await expect(readFile(path)).rejects.toMatchObject({ code: "ENOENT" });
  });
});
