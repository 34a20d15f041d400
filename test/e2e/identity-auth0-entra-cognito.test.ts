/**
 * Identity-provider profiles shaped after `shared/fixtures/idp-claims.json` — Auth0, Entra (v1 and
 * v2 issuers per directory) and Cognito access tokens — end to end: the official MCP client calls
 * `whoami` over HTTP and each tenant sees exactly its own identity, never the other tenant's, even
 * for the same user in both. Plus each profile's own forgeries.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { whoami } from "../../src/tools/demo/whoami.js";
import {
  type E2eServer,
  expectOwnIdentities,
  expectRefused,
  expectServing,
  post,
  RESOURCE,
  startServer,
  whoamiAs,
} from "./helpers.js";

const AUTH0 = ["org_9ybsU1dN2dKfDkBi", "org_AbC"] as const;
const ENTRA = ["72f988bf-86f1-41af-91ab-2d7cd011db47", "0b5a1d5c-3f2e-4e8a-9c7d-1a2b3c4d5e6f"] as const;
const ENTRA_AUDIENCE = "api://6e74172b-be56-4843-9ff4-e66a39bb12e3";
const COGNITO = ["acme-corp", "globex"] as const;
const COGNITO_CLIENT = "3n4b5urk1ft4fl3mg5e62d9ado";

describe("identity providers over HTTP with the MCP SDK client", () => {
  let idp: TestIssuer;
  let auth0: E2eServer;
  let entra: E2eServer;
  let cognito: E2eServer;

  beforeAll(async () => {
    idp = await startTestIssuer();
    const tenants = (ids: readonly string[]) => ids.map((id) => ({ id }));
    // PGlite start-up is CPU-bound: one server after the other is as fast as all at once, and lighter.
    auth0 = await startServer({
      config: {
        auth: { provider: "auth0", issuer: `${idp.issuer}/`, audience: RESOURCE, jwks_uri: idp.jwksUri },
      },
      tools: [whoami],
      tenants: tenants(AUTH0),
    });
    entra = await startServer({
      config: {
        auth: {
          provider: "entra",
          issuer: [...idp.entraIssuerTemplates],
          audience: ENTRA_AUDIENCE,
          jwks_uri: idp.jwksUri,
        },
      },
      tools: [whoami],
      tenants: tenants(ENTRA),
    });
    cognito = await startServer({
      config: {
        auth: { provider: "cognito", issuer: idp.issuer, client_id: COGNITO_CLIENT, jwks_uri: idp.jwksUri },
      },
      tools: [whoami],
      tenants: tenants(COGNITO),
    });
  }, 120_000);

  afterAll(async () => {
    await Promise.all([auth0, entra, cognito].map((s) => s?.close()));
    await idp?.close();
  });

  describe("auth0", () => {
    const token = (orgId: string, sub = "auth0|5f7c8ec7c33c6c004bbafe82") =>
      idp.auth0Token({
        orgId,
        orgName: `Org ${orgId}`,
        sub,
        audience: RESOURCE,
        scope: "openid notes:read",
        permissions: ["notes:write", "notes:read"],
      });

    it("whoami returns each organization's own identity (org_id, org_name, scope + permissions)", async () => {
      // The same user is a member of both organizations: only org_id tells them apart.
      await expectOwnIdentities(
        AUTH0,
        async (t) => whoamiAs(auth0, await token(t)),
        (me, t) => {
          expect(me).toEqual({
            tenantId: t,
            tenantName: `Org ${t}`,
            userId: "auth0|5f7c8ec7c33c6c004bbafe82",
            scopes: ["openid", "notes:read", "notes:write"],
            issuer: `${idp.issuer}/`,
          });
        },
      );
    });

    it("tenant ids are case-sensitive: org_abc is not org_AbC", async () => {
      await expectRefused(await post(auth0, { token: await token("org_abc") }), 403, "unknown_tenant");
      await expectServing(auth0, await token("org_AbC"), "org_AbC");
    });
  });

  describe("entra", () => {
    it("v2 and v1 tokens: tenant = tid (GUID), user = oid, scopes = scp + roles, issuer per directory", async () => {
      for (const version of [2, 1] as const) {
        await expectOwnIdentities(
          ENTRA,
          async (tid) =>
            whoamiAs(
              entra,
              await idp.entraToken({
                tid,
                oid: `00000000-0000-0000-0000-00000000000${version}`,
                audience: ENTRA_AUDIENCE,
                scp: "Files.Read User.Read",
                roles: ["Notes.Admin"],
                version,
              }),
            ),
          (me, tid) => {
            expect(me).toMatchObject({
              tenantId: tid,
              userId: `00000000-0000-0000-0000-00000000000${version}`,
              scopes: ["Files.Read", "User.Read", "Notes.Admin"],
              issuer: version === 2 ? `${idp.issuer}/${tid}/v2.0` : `${idp.issuer}/${tid}/`,
            });
          },
        );
      }
    });

    it("refuses a token whose issuer names another directory than its tid (401), and keeps serving", async () => {
      const [a, b] = ENTRA;
      for (const iss of [`${idp.issuer}/${b}/v2.0`, `${idp.issuer}/${b}/`]) {
        const forged = await idp.entraToken({ tid: a, audience: ENTRA_AUDIENCE, issuer: iss });
        await expectRefused(await post(entra, { token: forged }), 401, "invalid_token");
        await expectServing(entra, await idp.entraToken({ tid: a, audience: ENTRA_AUDIENCE }), a);
      }
      // A tid that is not a GUID cannot be substituted into the issuer template.
      const notGuid = await idp.entraToken({ tid: "../evil", audience: ENTRA_AUDIENCE });
      await expectRefused(await post(entra, { token: notGuid }), 401, "invalid_token");
      await expectServing(entra, await idp.entraToken({ tid: b, audience: ENTRA_AUDIENCE }), b);
    });

    it("a directory the {tid} templates admit cannot make itself global admin with the admin role or scope", async () => {
      // Anyone can create a directory, consent to a multi-tenant app and assign themselves its roles.
      const evil = "d3adbeef-0000-4000-8000-000000000bad";
      const forged = await idp.entraToken({
        tid: evil,
        audience: ENTRA_AUDIENCE,
        scp: "admin:global",
        roles: ["admin:global"],
      });
      const admin = await fetch(`${entra.url}/admin/api/tenants`, {
        headers: { authorization: `Bearer ${forged}` },
      });
      expect(admin.status).toBe(403);
      expect(((await admin.json()) as { error: string }).error).toBe("insufficient_scope");
      // On /mcp it is an ordinary token of an unregistered directory, not a global admin.
      await expectRefused(await post(entra, { token: forged }), 403, "unknown_tenant");
    });
  });

  describe("cognito", () => {
    it("access tokens: tenant = custom:tenant_id, checked by client_id without aud", async () => {
      await expectOwnIdentities(
        COGNITO,
        async (t) =>
          whoamiAs(
            cognito,
            await idp.cognitoAccessToken({
              tenantId: t,
              clientId: COGNITO_CLIENT,
              sub: "a1b2c3d4-0000-4000-8000-000000000001",
              scope: "notes/read notes/write",
            }),
          ),
        (me, t) => {
          expect(me).toEqual({
            tenantId: t,
            tenantName: `Tenant ${t}`,
            userId: "a1b2c3d4-0000-4000-8000-000000000001",
            scopes: ["notes/read", "notes/write"],
            issuer: idp.issuer,
          });
        },
      );
    });

    it("refuses an ID token and another app client's access token (401), and keeps serving", async () => {
      const [a] = COGNITO;
      const valid = await idp.cognitoAccessToken({ tenantId: a, clientId: COGNITO_CLIENT });
      const idToken = await idp.cognitoIdToken({ tenantId: a, clientId: COGNITO_CLIENT });
      await expectRefused(await post(cognito, { token: idToken }), 401, "invalid_token");
      await expectServing(cognito, valid, a);
      const otherClient = await idp.cognitoAccessToken({ tenantId: a, clientId: "another-app-client" });
      await expectRefused(await post(cognito, { token: otherClient }), 401, "invalid_token");
      await expectServing(cognito, valid, a);
    });
  });
});
