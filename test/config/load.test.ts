// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings are TOML using ${VAR} interpolation.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig, parseConfig } from "../../src/config/load.js";
import type { TenantryError } from "../../src/errors.js";

let dir: string;
let n = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "tenantry-config-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(text: string): Promise<string> {
  const path = join(dir, `tenantry-${++n}.toml`);
  await writeFile(path, text);
  return path;
}

/** Loads `text` from a fresh file and returns the error's message, failing if it loaded. */
async function failure(
  text: string,
  env: NodeJS.ProcessEnv = {},
): Promise<{ path: string; message: string }> {
  const path = await file(text);
  const error = (await loadConfig(path, env).then(
    () => expect.unreachable(`expected ${path} to be rejected`),
    (e: unknown) => e,
  )) as TenantryError;
  expect(error.code).toBe("config_invalid");
  expect(error.message).toContain(path);
  return { path, message: error.message };
}

const AUTH0 = '[auth]\nprovider = "auth0"\ndomain = "acme.auth0.com"\naudience = "https://mcp.acme.test"\n';

describe("loadConfig errors", () => {
  it("names an unknown top-level table", async () => {
    const { message } = await failure("[servr]\nport = 8080\n");
    expect(message).toContain("servr: unknown key");
  });

  it("names an unknown top-level value", async () => {
    const { message } = await failure("debug = true\n");
    expect(message).toContain("debug: unknown key");
  });

  it("names an unknown nested key with its full path", async () => {
    const { message } = await failure("[auth]\nenabeld = true\n");
    expect(message).toContain("auth.enabeld");
    expect(message).toContain("unknown key");
  });

  it("names an unknown key two tables deep", async () => {
    const { message } = await failure('[auth.multi_tenant]\ntenant_claims = "org_id"\n');
    expect(message).toContain("auth.multi_tenant.tenant_claims: unknown key");
  });

  it("names every problem, not only the first", async () => {
    const { message } = await failure('[server]\nprot = 1\n[storage]\nbackend = "ftp"\n');
    expect(message).toContain("server.prot: unknown key");
    expect(message).toContain("storage.backend");
  });

  it("names a key of the wrong type", async () => {
    const { message } = await failure('[server]\nport = "80"\n');
    expect(message).toMatch(/server\.port: .*number/);
  });

  it("names a value out of range", async () => {
    const { message } = await failure("[server]\nport = 70000\n");
    expect(message).toContain("server.port");
  });

  it("refuses rate-limit settings the limiter could not honour, at load rather than on every request", async () => {
    const burst = await failure("[rate_limit]\nburst = 20000000\n");
    expect(burst.message).toContain("rate_limit.burst");
    const limit = await failure("[auth.multi_tenant]\ndefault_rate_limit = 3000000000\n");
    expect(limit.message).toContain("auth.multi_tenant.default_rate_limit");
    // The largest accepted values are ones the limiter decides with.
    const { burstFor, assertGcraParams } = await import("../../src/limits/gcra.js");
    expect(() => assertGcraParams(1, burstFor(1, 10_000_000))).not.toThrow();
    expect(() => assertGcraParams(2_147_483_647, burstFor(2_147_483_647, 10_000_000))).not.toThrow();
  });

  it("names an invalid enum value", async () => {
    const { message } = await failure('[auth]\nprovider = "keycloak"\n');
    expect(message).toContain("auth.provider");
    expect(message).toContain('"auth0"');
  });

  it("reports invalid TOML", async () => {
    const { message } = await failure("[server\nport = 8080\n");
    expect(message).toContain("invalid TOML");
  });

  it("reports a duplicate key as invalid TOML", async () => {
    const { message } = await failure("[server]\nport = 1\nport = 2\n");
    expect(message).toContain("invalid TOML");
  });

  it("reports a missing file", async () => {
    const path = join(dir, "nope", "tenantry.toml");
    await expect(loadConfig(path, {})).rejects.toMatchObject({
      code: "config_invalid",
      message: expect.stringMatching(new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: .*ENOENT`)),
    });
  });
});

describe("${ENV_VAR} interpolation", () => {
  it("replaces variables in strings, lists and nested tables", async () => {
    const path = await file(
      [
        "[server]",
        'base_url = "https://${HOST}"',
        "[auth]",
        'provider = "oidc"',
        'issuer = ["https://${HOST}/idp", "https://other.test"]',
        'audience = "https://${HOST}/mcp"',
        "[database]",
        'url = "${DATABASE_URL}"',
      ].join("\n"),
    );
    const config = await loadConfig(path, { HOST: "mcp.acme.test", DATABASE_URL: "postgres://app@db/acme" });
    expect(config.baseUrl).toBe("https://mcp.acme.test");
    expect(config.resolvedAuth.issuers).toEqual(["https://mcp.acme.test/idp", "https://other.test"]);
    expect(config.resolvedAuth.audiences).toEqual(["https://mcp.acme.test/mcp"]);
    expect(config.database.url).toBe("postgres://app@db/acme");
  });

  it("inserts values literally, without reinterpreting $ patterns", async () => {
    const path = await file('[database]\nurl = "${DATABASE_URL}"\n');
    const url = "postgres://app:pa$$&$1@db/acme";
    expect((await loadConfig(path, { DATABASE_URL: url })).database.url).toBe(url);
  });

  it("fails on an unset variable, naming it and the key", async () => {
    const { message } = await failure('[database]\nurl = "${DATABASE_URL}"\n');
    expect(message).toContain("DATABASE_URL");
    expect(message).toContain("database.url");
  });

  it("names the list index of an unset variable", async () => {
    const { message } = await failure('[auth]\nprovider = "oidc"\nissuer = ["https://a.test", "${IDP}"]\n');
    expect(message).toContain("auth.issuer.1");
    expect(message).toContain("IDP");
  });

  it("treats a variable set to the empty string as set", async () => {
    const path = await file('[audit]\npath = "logs/${SUFFIX}audit.jsonl"\n');
    expect((await loadConfig(path, { SUFFIX: "" })).audit.path).toBe("logs/audit.jsonl");
  });

  it("leaves keys and non-string values alone", async () => {
    const path = await file('[lifecycle]\nretention_days = 7\narchive_dir = "$HOME/archive"\n');
    const config = await loadConfig(path, {});
    expect(config.lifecycle).toMatchObject({ retention_days: 7, archive_dir: "$HOME/archive" });
  });
});

describe("provider requirements", () => {
  it("oidc needs an issuer", async () => {
    const { message } = await failure('[auth]\nprovider = "oidc"\naudience = "https://mcp.acme.test"\n');
    expect(message).toContain("auth.issuer");
  });

  it("cognito needs a client_id", async () => {
    const { message } = await failure(
      '[auth]\nprovider = "cognito"\nregion = "eu-west-1"\nuser_pool_id = "eu-west-1_abc"\n',
    );
    expect(message).toContain("auth.client_id");
  });

  it("cognito needs a region and user pool unless the issuer is given", async () => {
    const { message } = await failure('[auth]\nprovider = "cognito"\nclient_id = "abc"\n');
    expect(message).toContain("auth.region");
    const path = await file(
      '[auth]\nprovider = "cognito"\nclient_id = "abc"\nissuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc"\n',
    );
    expect((await loadConfig(path, {})).resolvedAuth.jwksUri).toBe(
      "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc/.well-known/jwks.json",
    );
  });

  it("auth0 needs a domain", async () => {
    const { message } = await failure('[auth]\nprovider = "auth0"\naudience = "https://mcp.acme.test"\n');
    expect(message).toContain("auth.domain");
  });

  it("okta needs a domain", async () => {
    const { message } = await failure('[auth]\nprovider = "okta"\naudience = "api://default"\n');
    expect(message).toContain("auth.domain");
  });

  it.each(["auth0", "entra", "okta", "oidc"])("%s needs an audience", async (provider) => {
    const { message } = await failure(
      `[auth]\nprovider = "${provider}"\ndomain = "idp.acme.test"\nissuer = "https://idp.acme.test/"\n`,
    );
    expect(message).toContain("auth.audience");
  });

  it("auth0 derives issuer and JWKS from the domain", async () => {
    const config = await loadConfig(await file(AUTH0), {});
    expect(config.resolvedAuth).toMatchObject({
      issuers: ["https://acme.auth0.com/"],
      audiences: ["https://mcp.acme.test"],
      jwksUri: "https://acme.auth0.com/.well-known/jwks.json",
      tenantClaim: "org_id",
    });
  });
});

describe("defaults", () => {
  it("an empty file is the dev provider on 127.0.0.1:8080", async () => {
    const config = await loadConfig(await file(""), {});
    expect(config.baseUrl).toBe("http://127.0.0.1:8080");
    expect(config.resolvedAuth).toMatchObject({ provider: "dev", multiTenant: true, tenantClaim: "org_id" });
    expect(config.resolvedAuth.audiences).toContain("http://127.0.0.1:8080");
  });

  it("the dev provider's audience includes base_url (without a trailing slash) and the MCP endpoint", () => {
    const config = parseConfig({ server: { base_url: "https://mcp.acme.test/" } }, "t.toml", {});
    expect(config.baseUrl).toBe("https://mcp.acme.test");
    expect(config.resourceUrl).toBe("https://mcp.acme.test/mcp");
    expect(config.resolvedAuth.audiences).toEqual(["https://mcp.acme.test", "https://mcp.acme.test/mcp"]);
    expect(config.resolvedAuth.issuers).toEqual(["https://mcp.acme.test/dev-issuer"]);
  });

  it("a wildcard bind address becomes localhost in the base URL, an IPv6 literal is bracketed", () => {
    expect(parseConfig({ server: { host: "0.0.0.0", port: 9000 } }, "t.toml", {}).baseUrl).toBe(
      "http://localhost:9000",
    );
    expect(parseConfig({ server: { host: "::1" } }, "t.toml", {}).baseUrl).toBe("http://[::1]:8080");
  });

  it("configs do not share default objects", () => {
    const a = parseConfig({}, "a.toml", {});
    const b = parseConfig({}, "b.toml", {});
    a.server.allowed_origins.push("https://evil.test");
    a.auth.multi_tenant.admin_scope = "changed";
    expect(b.server.allowed_origins).toEqual([]);
    expect(b.auth.multi_tenant.admin_scope).toBe("admin:global");
  });
});
