/**
 * The attack table over real HTTP: every hostile request gets the exact status, the JSON body
 * `{error, message}` with the exact code and, for 401, the exact `WWW-Authenticate` challenge —
 * and the server keeps serving the legitimate tenant right after each one. Also: the request's
 * own limits (size, type, method, Origin, JSON) and the RFC 9728 metadata documents.
 */
import { createPublicKey } from "node:crypto";
import { base64url } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestIssuer, type TestIssuer, type TestKeyPair } from "../../src/testing/test-issuer.js";
import { whoami } from "../../src/tools/demo/whoami.js";
import {
  BASE_URL,
  type E2eServer,
  expectRefused,
  expectServing,
  INVALID_TOKEN_CHALLENGE,
  METADATA_URL,
  post,
  RESOURCE,
  startServer,
} from "./helpers.js";

const ACME = "acme";
const MAX_BODY = 64 * 1024;
const ALLOWED_ORIGIN = "https://app.example.com";

const encode = (value: unknown): string => base64url.encode(JSON.stringify(value));
const now = (): number => Math.floor(Date.now() / 1000);

describe("attacks over HTTP", () => {
  let idp: TestIssuer;
  let attacker: TestIssuer;
  let server: E2eServer;
  let valid: string;
  /** Claims of a valid Auth0-shaped token for acme, to vary one thing at a time. */
  let claims: Record<string, unknown>;
  /** A key pair the issuer's JWKS does not contain (RSA key generation is slow: made once). */
  let stranger: TestKeyPair;

  beforeAll(async () => {
    [idp, attacker] = await Promise.all([startTestIssuer(), startTestIssuer()]);
    stranger = await idp.otherKeyPair();
    server = await startServer({
      config: {
        server: { max_body_bytes: MAX_BODY, allowed_origins: [ALLOWED_ORIGIN] },
        auth: {
          provider: "auth0",
          issuer: `${idp.issuer}/`,
          audience: RESOURCE,
          jwks_uri: idp.jwksUri,
          multi_tenant: { default_rate_limit: 100_000 },
        },
      },
      tools: [whoami],
      tenants: [{ id: ACME }, { id: "globex" }, { id: "suspended-co" }, { id: "trial-co", trialDays: 14 }],
    });
    await server.app.tenants.suspend({ id: "e2e" }, "suspended-co");
    await server.app.registry.store.update("trial-co", { expiresAt: new Date(Date.now() - 1000) });
    server.app.registry.invalidate("trial-co");
    claims = { iss: `${idp.issuer}/`, aud: [RESOURCE], sub: "auth0|alice", scope: "openid", org_id: ACME };
    valid = await idp.sign(claims);
    await expectServing(server, valid, ACME);
  });

  afterAll(async () => {
    await server?.close();
    await Promise.all([idp?.close(), attacker?.close()]);
  });

  /** Sends `token` (or a raw Authorization header), expects the refusal, then a good call. */
  async function refusedThenServing(
    auth: { token?: string; authorization?: string },
    status: number,
    code: string,
  ): Promise<void> {
    const headers: Record<string, string> = auth.authorization ? { authorization: auth.authorization } : {};
    const response = await post(server, {
      ...(auth.token !== undefined ? { token: auth.token } : {}),
      headers,
    });
    await expectRefused(response, status, code);
    await expectServing(server, valid, ACME);
  }

  describe("401 invalid_token, with the resource-metadata challenge", () => {
    const cases: [string, () => Promise<{ token?: string; authorization?: string }>][] = [
      ["no Authorization header", async () => ({})],
      ["a Basic credential", async () => ({ authorization: "Basic YWxpY2U6c2VjcmV0" })],
      ["an empty bearer", async () => ({ authorization: "Bearer " })],
      ["a malformed token", async () => ({ token: "not.a-jwt" })],
      ["a token of junk segments", async () => ({ token: "eyJhbGciOi.eyJzdWIi.c2ln" })],
      [
        "alg none, unsigned",
        async () => ({ token: `${encode({ alg: "none", typ: "JWT" })}.${encode(claims)}.` }),
      ],
      [
        "alg none, with a made-up signature",
        async () => ({ token: `${encode({ alg: "none", typ: "JWT" })}.${encode(claims)}.AAAA` }),
      ],
      [
        "HS256 keyed with the issuer's RSA public key",
        async () => {
          const pem = createPublicKey({ key: idp.publicJwk, format: "jwk" }).export({
            type: "spki",
            format: "pem",
          }) as string;
          return {
            token: await idp.sign(claims, { header: { alg: "HS256" }, key: new TextEncoder().encode(pem) }),
          };
        },
      ],
      [
        "a key that is not in the JWKS (with the issuer's kid)",
        async () => ({ token: await idp.sign(claims, { key: stranger.privateKey }) }),
      ],
      [
        "a key that is not in the JWKS (with its own kid)",
        async () => {
          return {
            token: await idp.sign(claims, { key: stranger.privateKey, header: { kid: stranger.kid } }),
          };
        },
      ],
      [
        "a forged kid ../../dev/null",
        async () => ({ token: await idp.sign(claims, { header: { kid: "../../dev/null" } }) }),
      ],
      [
        "a jku header pointing at another JWKS",
        async () => ({
          token: await attacker.sign(claims, { header: { jku: attacker.jwksUri, kid: attacker.kid } }),
        }),
      ],
      [
        "a jku header on a token signed with the issuer's own key",
        async () => ({ token: await idp.sign(claims, { header: { jku: attacker.jwksUri } }) }),
      ],
      ["an expired token", async () => ({ token: await idp.sign({ ...claims, exp: now() - 3600 }) })],
      ["nbf in the future", async () => ({ token: await idp.sign({ ...claims, nbf: now() + 3600 }) })],
      [
        "a wrong issuer",
        async () => ({ token: await idp.sign({ ...claims, iss: "https://evil.example.com/" }) }),
      ],
      [
        "the issuer without its trailing slash",
        async () => ({ token: await idp.sign({ ...claims, iss: idp.issuer }) }),
      ],
      [
        "a wrong audience",
        async () => ({ token: await idp.sign({ ...claims, aud: ["https://other-api.example.com"] }) }),
      ],
      [
        "the server's base URL instead of its resource as audience",
        async () => ({ token: await idp.sign({ ...claims, aud: BASE_URL }) }),
      ],
      ["no exp", async () => ({ token: await idp.sign({ ...claims, exp: undefined }) })],
      ["a valid token with a byte appended", async () => ({ authorization: `Bearer ${valid}x` })],
    ];

    for (const [name, make] of cases) {
      it(name, async () => refusedThenServing(await make(), 401, "invalid_token"));
    }

    it("never fetches a JWKS named by the token", () => {
      expect(attacker.jwksRequests).toBe(0);
    });

    it("a 10 KB token, over auth.max_token_bytes", async () => {
      const big = await idp.sign({ ...claims, padding: "A".repeat(10 * 1024) });
      await refusedThenServing({ token: big }, 401, "invalid_token");
    });

    it("a 20 KB token is refused with 401 and the server keeps serving", async () => {
      const big = await idp.sign({ ...claims, padding: "A".repeat(20 * 1024) });
      expect(big.length).toBeGreaterThan(20 * 1024);
      await refusedThenServing({ token: big }, 401, "invalid_token");
    });
  });

  describe("403: identification and admission", () => {
    it("a valid token without the tenant claim is missing_tenant", async () => {
      const { org_id: _, ...noTenant } = claims;
      await refusedThenServing({ token: await idp.sign(noTenant) }, 403, "missing_tenant");
      await refusedThenServing({ token: await idp.sign({ ...claims, org_id: "" }) }, 403, "missing_tenant");
    });

    it("an unregistered tenant is unknown_tenant", async () => {
      await refusedThenServing(
        { token: await idp.sign({ ...claims, org_id: "initech" }) },
        403,
        "unknown_tenant",
      );
      await refusedThenServing(
        { token: await idp.sign({ ...claims, org_id: "ACME" }) },
        403,
        "unknown_tenant",
      );
    });

    it("a suspended tenant is tenant_suspended", async () => {
      const token = await idp.sign({ ...claims, org_id: "suspended-co" });
      await refusedThenServing({ token }, 403, "tenant_suspended");
    });

    it("a tenant whose trial has ended is trial_expired", async () => {
      const token = await idp.sign({ ...claims, org_id: "trial-co" });
      await refusedThenServing({ token }, 403, "trial_expired");
    });

    const hostile: [string, unknown][] = [
      ["a path traversal", "../acme"],
      ["a slash", "acme/../globex"],
      ["a leading slash", "/acme"],
      ["65 characters", "a".repeat(65)],
      ["unicode", "acmé"],
      ["a look-alike (Cyrillic а)", "\u0430cme"],
      ["whitespace", "acme "],
      ["a NUL byte", "acme\u0000"],
      ["an SQL fragment", "acme';--"],
      ["an object", { id: ACME }],
      ["an array", [ACME]],
      ["a number", 42],
      ["a boolean", true],
    ];
    for (const [name, value] of hostile) {
      it(`a hostile tenant claim (${name}) is a 403, never a 500`, async () => {
        const response = await post(server, { token: await idp.sign({ ...claims, org_id: value }) });
        expect(response.status).toBe(403);
        const body = (await response.clone().json()) as { error: string };
        expect(["missing_tenant", "unknown_tenant"]).toContain(body.error);
        await expectRefused(response, 403, body.error);
        // Refused without being echoed back.
        const message = (body as unknown as { message: string }).message;
        if (typeof value === "string") expect(message).not.toContain(value);
        await expectServing(server, valid, ACME);
      });
    }
  });

  describe("limits on the request itself", () => {
    it("a body over max_body_bytes is 413 payload_too_large (declared length)", async () => {
      const body = JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "ping",
        params: { pad: "x".repeat(MAX_BODY) },
      });
      await expectRefused(await post(server, { token: valid, body }), 413, "payload_too_large");
      await expectServing(server, valid, ACME);
    });

    it("a body over max_body_bytes is 413 payload_too_large (chunked, no declared length)", async () => {
      const chunk = new TextEncoder().encode("x".repeat(16 * 1024));
      let sent = 0;
      const stream = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent >= 8) controller.close();
          else {
            sent++;
            controller.enqueue(chunk);
          }
        },
      });
      const response = await fetch(server.mcpUrl, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${valid}` },
        body: stream,
        duplex: "half",
      } as RequestInit);
      await expectRefused(response, 413, "payload_too_large");
      await expectServing(server, valid, ACME);
    });

    it("a body that is not JSON by type is 415 unsupported_media_type", async () => {
      for (const type of ["text/plain", "application/x-www-form-urlencoded", "application/jsonp"]) {
        const response = await post(server, { token: valid, headers: { "content-type": type } });
        await expectRefused(response, 415, "unsupported_media_type");
      }
      await expectServing(server, valid, ACME);
    });

    it("DELETE and PUT on a stateless server are 405 with Allow", async () => {
      for (const method of ["DELETE", "PUT"]) {
        const response = await post(server, { token: valid, method });
        expect(response.headers.get("allow"), method).toBe("POST");
        await expectRefused(response, 405, "method_not_allowed");
      }
      await expectServing(server, valid, ACME);
    });

    it("an unsupported MCP-Protocol-Version is 400 bad_request", async () => {
      const response = await post(server, {
        token: valid,
        headers: { "mcp-protocol-version": "1999-01-01" },
      });
      await expectRefused(response, 400, "bad_request");
      await expectServing(server, valid, ACME);
    });

    it("GET /mcp is 405 with Allow", async () => {
      const response = await post(server, { token: valid, method: "GET" });
      expect(response.headers.get("allow")).toBe("POST");
      await expectRefused(response, 405, "method_not_allowed");
      await expectServing(server, valid, ACME);
    });

    it("a foreign Origin is 403 forbidden; the configured and the base URL's origins pass", async () => {
      await expectRefused(
        await post(server, { token: valid, headers: { origin: "https://evil.example.com" } }),
        403,
        "forbidden",
      );
      // Before authentication: a foreign page learns nothing about the token.
      await expectRefused(
        await post(server, { headers: { origin: "http://127.0.0.1:1" } }),
        403,
        "forbidden",
      );
      for (const origin of [ALLOWED_ORIGIN, BASE_URL]) {
        const ok = await post(server, { token: valid, headers: { origin } });
        expect(ok.status, origin).toBe(200);
        await ok.body?.cancel();
      }
      await expectServing(server, valid, ACME);
    });

    it("invalid JSON is 400 with a JSON-RPC parse error", async () => {
      const response = await post(server, { token: valid, body: '{"jsonrpc": "2.0", "id": 1, "method": ' });
      expect(response.status).toBe(400);
      expect(await response.json()).toEqual({
        jsonrpc: "2.0",
        id: null,
        error: { code: -32700, message: expect.any(String) },
      });
      await expectServing(server, valid, ACME);
    });
  });

  describe("protected-resource metadata (RFC 9728)", () => {
    for (const path of [
      "/.well-known/oauth-protected-resource",
      "/.well-known/oauth-protected-resource/mcp",
    ]) {
      it(`GET ${path}`, async () => {
        const response = await fetch(`${server.url}${path}`);
        expect(response.status).toBe(200);
        expect(response.headers.get("content-type")).toMatch(/^application\/json/);
        const doc = (await response.json()) as Record<string, unknown>;
        expect(doc).toMatchObject({
          resource: RESOURCE,
          authorization_servers: [`${idp.issuer}/`],
          bearer_methods_supported: ["header"],
        });
        expect(doc.resource).toBe(server.app.config.resourceUrl);
        expect(doc.authorization_servers).toEqual(server.app.config.resolvedAuth.issuers);
        // RFC 9728 §2: scopes_supported, when present, is a JSON array of strings.
        expect(Array.isArray(doc.scopes_supported ?? [])).toBe(true);
        expect(doc.scopes_supported ?? []).not.toContain("admin:global");
        for (const value of Object.values(doc)) expect(value).not.toBeNull();
      });
    }

    it("the challenge's resource_metadata URL is the one served, for the resource the token must name", async () => {
      const response = await post(server, {});
      const challenge = response.headers.get("www-authenticate");
      expect(challenge).toBe(INVALID_TOKEN_CHALLENGE);
      await response.body?.cancel();
      const advertised = /resource_metadata="([^"]+)"/.exec(challenge ?? "")?.[1];
      expect(advertised).toBe(METADATA_URL);
      const path = new URL(advertised!).pathname;
      const doc = (await (await fetch(`${server.url}${path}`)).json()) as { resource: string };
      // RFC 9728 §3.3: the resource in the document is the resource the metadata URL was built from.
      expect(
        `${new URL(doc.resource).origin}/.well-known/oauth-protected-resource${new URL(doc.resource).pathname}`,
      ).toBe(METADATA_URL);
    });
  });
});
