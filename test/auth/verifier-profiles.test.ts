import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CryptoKey, importJWK } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadOrCreateDevKeys, mintDevToken } from "../../src/auth/dev-issuer.js";
import { createTokenVerifier } from "../../src/auth/verifier.js";
import { parseConfig } from "../../src/config/load.js";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import {
  AUDIENCE,
  COGNITO_CLIENT,
  ENTRA_AUDIENCE,
  expectIdpUnavailable,
  expectInvalidToken,
  nowSeconds,
  resolveAuth,
  TID,
} from "./helpers.js";

let idp: TestIssuer;
beforeAll(async () => {
  idp = await startTestIssuer();
});
afterAll(() => idp.close());

describe("provider profiles", () => {
  it("auth0: org token, scopes from scope + permissions, aud as array or string", async () => {
    const auth = resolveAuth({
      provider: "auth0",
      issuer: `${idp.issuer}/`,
      audience: AUDIENCE,
      jwks_uri: idp.jwksUri,
    });
    const verifier = createTokenVerifier(auth);
    const token = await idp.auth0Token({
      orgId: "org_9ybsU1dN2dKfDkBi",
      orgName: "globex-corp",
      sub: "auth0|6553da60a54af58e29493993",
      audience: AUDIENCE,
      scope: "openid profile read:documents",
      permissions: ["read:documents", "write:documents"],
    });
    const verified = await verifier.verify(token);
    expect(verified.issuer).toBe(`${idp.issuer}/`);
    expect(verified.subject).toBe("auth0|6553da60a54af58e29493993");
    expect(verified.userId).toBe("auth0|6553da60a54af58e29493993");
    expect(verified.scopes).toEqual(["openid", "profile", "read:documents", "write:documents"]);
    expect(verified.claims.org_id).toBe("org_9ybsU1dN2dKfDkBi");
    expect(verified.expiresAt).toBeGreaterThan(nowSeconds());

    const m2m = await idp.sign({
      iss: `${idp.issuer}/`,
      sub: "awZfdIir8YFdGZWkvCejDoUb7SjTDicx@clients",
      aud: AUDIENCE,
      scope: "admin:global",
      gty: "client-credentials",
    });
    expect((await verifier.verify(m2m)).scopes).toEqual(["admin:global"]);
  });

  it("auth0 (ES256 issuer) verifies when the algorithm is configured", async () => {
    const es = await startTestIssuer({ alg: "ES256" });
    try {
      const auth = resolveAuth({
        provider: "auth0",
        issuer: `${es.issuer}/`,
        audience: AUDIENCE,
        jwks_uri: es.jwksUri,
        algorithms: ["ES256"],
      });
      const token = await es.auth0Token({ orgId: "org_a", audience: AUDIENCE });
      expect((await createTokenVerifier(auth).verify(token)).claims.org_id).toBe("org_a");
      // The default RS256 pin refuses the same token.
      const pinned = resolveAuth({
        provider: "auth0",
        issuer: `${es.issuer}/`,
        audience: AUDIENCE,
        jwks_uri: es.jwksUri,
      });
      await expectInvalidToken(createTokenVerifier(pinned).verify(token), /algorithm/);
    } finally {
      await es.close();
    }
  });

  const entraAuth = () =>
    resolveAuth({
      provider: "entra",
      issuer: [...idp.entraIssuerTemplates],
      audience: ENTRA_AUDIENCE,
      jwks_uri: idp.jwksUri,
    });

  it("entra v2: iss from the token's tid, userId = oid, scopes = scp + roles", async () => {
    const oid = "690222be-ff1a-4d56-abd1-7e4f7d38e474";
    const token = await idp.entraToken({
      tid: TID,
      oid,
      audience: ENTRA_AUDIENCE,
      scp: "Tools.Read Tools.Write",
      roles: ["Tools.Admin"],
    });
    const verified = await createTokenVerifier(entraAuth()).verify(token);
    expect(verified.issuer).toBe(`${idp.issuer}/${TID}/v2.0`);
    expect(verified.userId).toBe(oid);
    expect(verified.subject).not.toBe(oid);
    expect(verified.scopes).toEqual(["Tools.Read", "Tools.Write", "Tools.Admin"]);
    expect(verified.claims.tid).toBe(TID);
  });

  it("entra v1: sts-style issuer template, upper-case GUID accepted", async () => {
    const upper = TID.toUpperCase();
    const token = await idp.entraToken({
      tid: upper,
      audience: ENTRA_AUDIENCE,
      scp: "Tools.Read",
      version: 1,
    });
    const verified = await createTokenVerifier(entraAuth()).verify(token);
    expect(verified.issuer).toBe(`${idp.issuer}/${upper}/`);
    expect(verified.claims.ver).toBe("1.0");
    expect(verified.scopes).toEqual(["Tools.Read"]);
  });

  it("cognito: access token checked by token_use and client_id, custom:tenant_id readable", async () => {
    const auth = resolveAuth({
      provider: "cognito",
      issuer: idp.issuer,
      client_id: COGNITO_CLIENT,
      jwks_uri: idp.jwksUri,
    });
    const token = await idp.cognitoAccessToken({
      tenantId: "acme",
      clientId: COGNITO_CLIENT,
      scope: "openid tools/read tools/write",
      sub: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    });
    const verified = await createTokenVerifier(auth).verify(token);
    expect(verified.issuer).toBe(idp.issuer);
    expect(verified.userId).toBe("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
    expect(verified.scopes).toEqual(["openid", "tools/read", "tools/write"]);
    expect(verified.claims["custom:tenant_id"]).toBe("acme");
    expect(auth.tenantClaim).toBe("custom:tenant_id");
  });

  it("okta: keys found through discovery, scp as an array", async () => {
    const before = idp.discoveryRequests;
    const auth = resolveAuth({ provider: "okta", issuer: idp.issuer, audience: "api://default" });
    expect(auth.discovery).toBe(true);
    const verifier = createTokenVerifier(auth);
    const claims = {
      ver: 1,
      iss: idp.issuer,
      aud: "api://default",
      cid: "0oa1",
      uid: "00u1",
      sub: "ada@example.com",
    };
    const a = await idp.sign({ ...claims, scp: ["openid", "tools:read"], tenant_id: "acme" });
    const b = await idp.sign({ ...claims, scp: ["tools:write"], tenant_id: "acme" });
    expect((await verifier.verify(a)).scopes).toEqual(["openid", "tools:read"]);
    expect((await verifier.verify(b)).userId).toBe("ada@example.com");
    expect(idp.discoveryRequests - before).toBe(1);
  });

  it("oidc: discovery uses the given fetch, and a document naming another issuer is refused", async () => {
    let calls = 0;
    const fetchImpl: typeof fetch = (input, init) => {
      calls++;
      return fetch(input, init);
    };
    const auth = resolveAuth({ provider: "oidc", issuer: idp.issuer, audience: AUDIENCE });
    const token = await idp.sign({
      iss: idp.issuer,
      aud: AUDIENCE,
      sub: "u1",
      scope: "a b",
      tenant_id: "t1",
    });
    const verified = await createTokenVerifier(auth, { fetchImpl }).verify(token);
    expect(verified.scopes).toEqual(["a", "b"]);
    expect(calls).toBe(2); // discovery + JWKS

    // Configured with a trailing slash, the document's issuer (no slash) does not match exactly.
    const mismatched = resolveAuth({ provider: "oidc", issuer: `${idp.issuer}/`, audience: AUDIENCE });
    const other = await idp.sign({ iss: `${idp.issuer}/`, aud: AUDIENCE, sub: "u1" });
    // The server's configuration does not match its IdP: not the token's fault, a 503.
    await expectIdpUnavailable(createTokenVerifier(mismatched).verify(other), /metadata/);
  });

  it("oidc: a failed discovery is retried after a back-off, not on every request", async () => {
    let clock = Date.now();
    let failures = 1;
    let calls = 0;
    const fetchImpl: typeof fetch = (input, init) => {
      calls++;
      if (failures-- > 0) return Promise.reject(new TypeError("fetch failed"));
      return fetch(input, init);
    };
    const auth = resolveAuth({ provider: "oidc", issuer: idp.issuer, audience: AUDIENCE });
    const verifier = createTokenVerifier(auth, { fetchImpl, now: () => clock });
    const token = await idp.sign({ iss: idp.issuer, aud: AUDIENCE, sub: "u1" });
    await expectIdpUnavailable(verifier.verify(token), /metadata unavailable/);
    await expectIdpUnavailable(verifier.verify(token), /metadata unavailable/);
    expect(calls).toBe(1);
    clock += 6000;
    expect((await verifier.verify(token)).subject).toBe("u1");
  });

  it("a JWKS that cannot be fetched (network error, HTTP 500) is service_unavailable, and recovers", async () => {
    let mode: "down" | "500" | "up" = "down";
    const fetchImpl: typeof fetch = (input, init) => {
      if (mode === "down") return Promise.reject(new TypeError("fetch failed"));
      if (mode === "500") return Promise.resolve(new Response("oops", { status: 500 }));
      return fetch(input, init);
    };
    const auth = resolveAuth({
      provider: "oidc",
      issuer: idp.issuer,
      audience: AUDIENCE,
      jwks_uri: idp.jwksUri,
      jwks_cooldown_s: 0,
    });
    const verifier = createTokenVerifier(auth, { fetchImpl });
    const token = await idp.sign({ iss: idp.issuer, aud: AUDIENCE, sub: "u1" });
    await expectIdpUnavailable(verifier.verify(token), /key set unavailable/);
    mode = "500";
    await expectIdpUnavailable(verifier.verify(token), /HTTP 500/);
    mode = "up";
    expect((await verifier.verify(token)).subject).toBe("u1");
    // A bad signature is still the token's fault while the IdP is up.
    const at = token.lastIndexOf(".") + 1; // the signature's first character: all six bits count
    const forged = `${token.slice(0, at)}${token[at] === "A" ? "B" : "A"}${token.slice(at + 1)}`;
    await expectInvalidToken(verifier.verify(forged));
  });

  it("dev: the local issuer's tokens verify with its key set", async () => {
    const dir = await mkdtemp(join(tmpdir(), "tenantry-dev-"));
    try {
      const config = parseConfig({ auth: { provider: "dev" } }, "test.toml", {});
      const keys = await loadOrCreateDevKeys(dir);
      const token = await mintDevToken(keys, {
        issuer: config.resolvedAuth.issuers[0]!,
        audience: config.resourceUrl,
        tenantId: "acme",
        tenantName: "Acme Inc",
        sub: "alice",
        scopes: ["notes:read", "admin:global"],
        ttlSeconds: 3600,
      });
      const verified = await createTokenVerifier(config.resolvedAuth, { keys: keys.keySet }).verify(token);
      expect(verified).toMatchObject({ issuer: "http://127.0.0.1:8080/dev-issuer", userId: "alice" });
      expect(verified.scopes).toEqual(["notes:read", "admin:global"]);
      expect(verified.claims).toMatchObject({ org_id: "acme", org_name: "Acme Inc" });
      // A single CryptoKey works as `keys` too.
      const key = (await importJWK(keys.publicJwk, "ES256")) as CryptoKey;
      expect((await createTokenVerifier(config.resolvedAuth, { keys: key }).verify(token)).subject).toBe(
        "alice",
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses to build a verifier without a key source", () => {
    const auth = resolveAuth({ provider: "dev" });
    expect(() => createTokenVerifier(auth)).toThrow(/key source/);
  });
});
