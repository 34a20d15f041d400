/**
 * Identity-provider profiles that find their keys themselves — Okta and generic OIDC through
 * OpenID discovery (tenant claim as a dotted path `org.id` and as a namespaced URL claim), and the
 * dev issuer's own keys — end to end with the official MCP client over HTTP.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadOrCreateDevKeys, mintDevToken } from "../../src/auth/dev-issuer.js";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { whoami } from "../../src/tools/demo/whoami.js";
import {
  BASE_URL,
  type E2eServer,
  expectOwnIdentities,
  expectRefused,
  post,
  RESOURCE,
  startServer,
  whoamiAs,
} from "./helpers.js";

const OKTA = ["0oa1acme", "0oa2globex"] as const;
const OKTA_AUDIENCE = "api://tenantry";
const OIDC = ["acme.eu-1", "globex:prod"] as const;
const ORG_CLAIM = "https://example.com/org";
const DEV = ["acme", "globex"] as const;

describe("identity providers over HTTP with the MCP SDK client", () => {
  let idp: TestIssuer;
  let okta: E2eServer;
  let oidc: E2eServer;
  let dev: E2eServer;

  beforeAll(async () => {
    idp = await startTestIssuer();
    const tenants = (ids: readonly string[]) => ids.map((id) => ({ id }));
    // PGlite start-up is CPU-bound: one server after the other is as fast as all at once, and lighter.
    okta = await startServer({
      // No jwks_uri: keys are found through OpenID discovery at the issuer.
      config: {
        auth: {
          provider: "okta",
          issuer: idp.issuer,
          audience: OKTA_AUDIENCE,
          multi_tenant: { tenant_claim: "org.id", tenant_name_claim: "org.name" },
        },
      },
      tools: [whoami],
      tenants: tenants(OKTA),
    });
    oidc = await startServer({
      config: {
        auth: {
          provider: "oidc",
          issuer: idp.issuer,
          audience: RESOURCE,
          multi_tenant: { tenant_claim: ORG_CLAIM, tenant_name_claim: "https://example.com/org_name" },
        },
      },
      tools: [whoami],
      tenants: tenants(OIDC),
    });
    dev = await startServer({
      config: { auth: { provider: "dev" } },
      tools: [whoami],
      tenants: tenants(DEV),
    });
  }, 120_000);

  afterAll(async () => {
    await Promise.all([okta, oidc, dev].map((s) => s?.close()));
    await idp?.close();
  });

  describe("okta (discovery, tenant claim as a dotted path)", () => {
    it("whoami reads the tenant from org.id and scopes from scp", async () => {
      await expectOwnIdentities(
        OKTA,
        async (t) =>
          whoamiAs(
            okta,
            await idp.sign({
              ver: 1,
              iss: idp.issuer,
              aud: OKTA_AUDIENCE,
              sub: "ada@example.com",
              uid: "00u1ada",
              cid: "0oaclient",
              scp: ["notes.read", "offline_access"],
              org: { id: t, name: `Okta ${t}` },
            }),
          ),
        (me, t) => {
          expect(me).toEqual({
            tenantId: t,
            tenantName: `Okta ${t}`,
            userId: "ada@example.com",
            scopes: ["notes.read", "offline_access"],
            issuer: idp.issuer,
          });
        },
      );
      expect(idp.discoveryRequests).toBeGreaterThanOrEqual(1);
    });
  });

  describe("oidc (discovery, namespaced URL tenant claim)", () => {
    it("whoami reads the tenant from https://example.com/org", async () => {
      await expectOwnIdentities(
        OIDC,
        async (t) =>
          whoamiAs(
            oidc,
            await idp.sign({
              iss: idp.issuer,
              aud: RESOURCE,
              sub: "user-42",
              scope: "notes:read",
              [ORG_CLAIM]: t,
              "https://example.com/org_name": `OIDC ${t}`,
            }),
          ),
        (me, t) => {
          expect(me).toEqual({
            tenantId: t,
            tenantName: `OIDC ${t}`,
            userId: "user-42",
            scopes: ["notes:read"],
            issuer: idp.issuer,
          });
        },
      );
    });

    it("a nested object spelling the URL as a path is not the namespaced claim", async () => {
      // {"https://example": {"com/org": ...}} would be "https://example.com/org" as a dotted path.
      const token = await idp.sign({
        iss: idp.issuer,
        aud: RESOURCE,
        sub: "user-43",
        "https://example": { "com/org": OIDC[1] },
      });
      await expectRefused(await post(oidc, { token }), 403, "missing_tenant");
    });
  });

  describe("dev issuer", () => {
    it("tokens minted with the dev keys identify each tenant, provider dev", async () => {
      const keys = await loadOrCreateDevKeys(dev.dataDir);
      const issuer = dev.app.config.resolvedAuth.issuers[0]!;
      expect(issuer).toBe(`${BASE_URL}/dev-issuer`);
      expect(dev.app.config.resolvedAuth.provider).toBe("dev");
      await expectOwnIdentities(
        DEV,
        async (t) =>
          whoamiAs(
            dev,
            await mintDevToken(keys, {
              issuer,
              audience: BASE_URL,
              tenantId: t,
              tenantName: `Dev ${t}`,
              sub: "alice",
              scopes: ["notes:read", "documents:write"],
              ttlSeconds: 600,
            }),
          ),
        (me, t) => {
          expect(me).toEqual({
            tenantId: t,
            tenantName: `Dev ${t}`,
            userId: "alice",
            scopes: ["notes:read", "documents:write"],
            issuer,
          });
        },
      );
      const jwks = (await (await fetch(`${dev.url}/dev-issuer/.well-known/jwks.json`)).json()) as {
        keys: { kid: string; d?: string }[];
      };
      expect(jwks.keys.map((k) => k.kid)).toEqual([keys.kid]);
      expect(jwks.keys[0]).not.toHaveProperty("d");
    });

    it("a token from another issuer's key is refused by the dev server", async () => {
      const foreign = await idp.auth0Token({
        orgId: DEV[0],
        audience: BASE_URL,
        issuer: `${BASE_URL}/dev-issuer`,
      });
      await expectRefused(await post(dev, { token: foreign }), 401, "invalid_token");
    });
  });
});
