import { createPublicKey, randomBytes } from "node:crypto";
import fc from "fast-check";
import { base64url } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTokenVerifier, type TokenVerifier } from "../../src/auth/verifier.js";
import { isTenantryError } from "../../src/errors.js";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import {
  AUDIENCE,
  COGNITO_CLIENT,
  ENTRA_AUDIENCE,
  expectInvalidToken,
  nowSeconds,
  OTHER_TID,
  resolveAuth,
  TID,
} from "./helpers.js";

let idp: TestIssuer;
let attacker: TestIssuer;
let verifier: TokenVerifier;
let claims: Record<string, unknown>;

const encode = (value: unknown): string => base64url.encode(JSON.stringify(value));

beforeAll(async () => {
  [idp, attacker] = await Promise.all([startTestIssuer(), startTestIssuer()]);
  verifier = createTokenVerifier(
    resolveAuth({ provider: "auth0", issuer: `${idp.issuer}/`, audience: AUDIENCE, jwks_uri: idp.jwksUri }),
  );
  claims = { iss: `${idp.issuer}/`, aud: AUDIENCE, sub: "auth0|victim", org_id: "org_victim" };
  // The baseline must verify, or every "refused" below would prove nothing.
  await verifier.verify(await idp.sign(claims));
});
afterAll(async () => {
  await Promise.all([idp.close(), attacker.close()]);
});

describe("attacks on the token verifier: every one is invalid_token", () => {
  it("malformed tokens", async () => {
    const good = await idp.sign(claims);
    const [h, p] = good.split(".");
    for (const bad of [
      "",
      "abc",
      "a.b",
      "a.b.c.d",
      `${h}.${p}.`,
      `${h}.${p}.sig with space`,
      "a.b.c",
      `${encode("not an object")}.${p}.AAAA`,
      `${base64url.encode("{not json")}.${p}.AAAA`,
      `${h}.${base64url.encode("{not json")}.AAAA`,
      `${h}.${encode([1, 2])}.AAAA`,
      `${good}\n`,
    ]) {
      await expectInvalidToken(verifier.verify(bad));
    }
    await expectInvalidToken(verifier.verify(undefined as unknown as string), /missing/);
  });

  it("alg none, with and without a signature", async () => {
    const header = encode({ alg: "none", typ: "JWT" });
    const payload = encode({ ...claims, exp: nowSeconds() + 600 });
    await expectInvalidToken(verifier.verify(`${header}.${payload}.`));
    await expectInvalidToken(verifier.verify(`${header}.${payload}.AAAA`), /algorithm/);
  });

  it("HS256 keyed with the issuer's RSA public key (PEM and DER)", async () => {
    const publicKey = createPublicKey({ key: idp.publicJwk as never, format: "jwk" });
    const pem = Buffer.from(publicKey.export({ type: "spki", format: "pem" }));
    const der = publicKey.export({ type: "spki", format: "der" });
    for (const secret of [pem, der]) {
      const token = await idp.sign(claims, { header: { alg: "HS256" }, key: new Uint8Array(secret) });
      await expectInvalidToken(verifier.verify(token), /algorithm/);
    }
  });

  it("a key not in the JWKS, under the issuer's kid or its own", async () => {
    const other = await idp.otherKeyPair();
    await expectInvalidToken(verifier.verify(await idp.sign(claims, { key: other.privateKey })), /signature/);
    const ownKid = await idp.sign(claims, { key: other.privateKey, header: { kid: other.kid } });
    await expectInvalidToken(verifier.verify(ownKid), /no matching key/);
  });

  it('kid "../../dev/null" is just an unknown key', async () => {
    const token = await idp.sign(claims, { header: { kid: "../../dev/null" } });
    await expectInvalidToken(verifier.verify(token), /no matching key/);
  });

  it("jku pointing at another issuer's JWKS is refused without fetching it", async () => {
    const token = await attacker.sign(claims, { header: { jku: attacker.jwksUri } });
    await expectInvalidToken(verifier.verify(token), /jku/);
    expect(attacker.jwksRequests).toBe(0);
  });

  it("embedded jwk, x5c and x5u headers are refused", async () => {
    const other = await idp.otherKeyPair();
    const sign = (header: Record<string, unknown>) =>
      idp.sign(claims, { key: other.privateKey, header: { kid: other.kid, ...header } });
    await expectInvalidToken(verifier.verify(await sign({ jwk: other.publicJwk })), /jwk/);
    await expectInvalidToken(verifier.verify(await sign({ x5c: ["MIIB"] })), /x5c/);
    await expectInvalidToken(verifier.verify(await sign({ x5u: `${attacker.issuer}/cert.pem` })), /x5u/);
    // Even signed by the real key, a token carrying a key reference is refused.
    await expectInvalidToken(
      verifier.verify(await idp.sign(claims, { header: { jku: idp.jwksUri } })),
      /jku/,
    );
  });

  it("expired, beyond the clock tolerance; accepted within it", async () => {
    const now = nowSeconds();
    await expectInvalidToken(verifier.verify(await idp.sign({ ...claims, exp: now - 31 })), /expired/);
    await expect(verifier.verify(await idp.sign({ ...claims, exp: now - 5 }))).resolves.toBeDefined();
  });

  it("nbf in the future", async () => {
    await expectInvalidToken(verifier.verify(await idp.sign({ ...claims, nbf: nowSeconds() + 3600 })), /nbf/);
  });

  it("missing exp, missing or empty sub", async () => {
    await expectInvalidToken(verifier.verify(await idp.sign({ ...claims, exp: undefined })), /exp/);
    await expectInvalidToken(verifier.verify(await idp.sign({ ...claims, sub: undefined })), /sub/);
    await expectInvalidToken(verifier.verify(await idp.sign({ ...claims, sub: "" })), /sub/);
    await expectInvalidToken(verifier.verify(await idp.sign({ ...claims, exp: "tomorrow" })), /exp/);
  });

  it("wrong issuer", async () => {
    for (const iss of [attacker.issuer, `${idp.issuer}`, `${idp.issuer}//`, undefined]) {
      await expectInvalidToken(verifier.verify(await idp.sign({ ...claims, iss })), /iss/);
    }
  });

  it("wrong or missing audience (RFC 8707)", async () => {
    const wrong = await idp.auth0Token({ orgId: "org_a", audience: "https://other.example.com" });
    await expectInvalidToken(verifier.verify(wrong), /aud/);
    await expectInvalidToken(verifier.verify(await idp.sign({ ...claims, aud: undefined })), /aud/);
  });

  describe("entra", () => {
    let entra: TokenVerifier;
    beforeAll(() => {
      entra = createTokenVerifier(
        resolveAuth({
          provider: "entra",
          issuer: [...idp.entraIssuerTemplates],
          audience: ENTRA_AUDIENCE,
          jwks_uri: idp.jwksUri,
        }),
      );
    });

    it("iss naming another directory than the tid claim", async () => {
      const token = await idp.entraToken({
        tid: TID,
        audience: ENTRA_AUDIENCE,
        issuer: `${idp.issuer}/${OTHER_TID}/v2.0`,
      });
      await expectInvalidToken(entra.verify(token), /iss/);
    });

    it("tid that is not a GUID, even when iss was built from it", async () => {
      for (const tid of ["not-a-guid", `${TID}/x`, "", "../../{tid}"]) {
        const token = await idp.entraToken({ tid, audience: ENTRA_AUDIENCE });
        await expectInvalidToken(entra.verify(token), /tid/);
      }
      const noTid = await idp.sign({ iss: `${idp.issuer}/${TID}/v2.0`, aud: ENTRA_AUDIENCE, sub: "x" });
      await expectInvalidToken(entra.verify(noTid), /tid/);
    });

    it("the admin scope from a directory a {tid} template admits is dropped: any directory can assign itself the app's roles", async () => {
      // An attacker's own directory consents to the multi-tenant app and assigns itself the role.
      const home = `${idp.issuer}/${TID}/v2.0`;
      const withHome = createTokenVerifier(
        resolveAuth({
          provider: "entra",
          issuer: [...idp.entraIssuerTemplates, home],
          audience: ENTRA_AUDIENCE,
          jwks_uri: idp.jwksUri,
        }),
      );
      for (const v of [entra, withHome]) {
        const foreign = await v.verify(
          await idp.entraToken({
            tid: OTHER_TID,
            audience: ENTRA_AUDIENCE,
            scp: "admin:global Files.Read",
            roles: ["admin:global"],
          }),
        );
        expect(foreign.scopes).toEqual(["Files.Read"]);
      }
      // The operator's own directory, listed as a fixed issuer, keeps it.
      const own = await withHome.verify(
        await idp.entraToken({ tid: TID, audience: ENTRA_AUDIENCE, roles: ["admin:global"] }),
      );
      expect(own.issuer).toBe(home);
      expect(own.scopes).toEqual(["admin:global"]);
    });
  });

  describe("cognito", () => {
    let cognito: TokenVerifier;
    beforeAll(() => {
      cognito = createTokenVerifier(
        resolveAuth({
          provider: "cognito",
          issuer: idp.issuer,
          client_id: COGNITO_CLIENT,
          jwks_uri: idp.jwksUri,
        }),
      );
    });

    it("an ID token presented as an access token", async () => {
      const token = await idp.cognitoIdToken({ tenantId: "acme", clientId: COGNITO_CLIENT });
      await expectInvalidToken(cognito.verify(token), /token_use/);
    });

    it("an access token for another app client", async () => {
      const token = await idp.cognitoAccessToken({ tenantId: "acme", clientId: "someotherclient" });
      await expectInvalidToken(cognito.verify(token), /client_id/);
    });
  });

  it("a 20 KB token is refused before any parsing or key fetch", async () => {
    const before = idp.jwksRequests;
    const huge = await idp.sign({ ...claims, padding: "x".repeat(20 * 1024) });
    await expectInvalidToken(verifier.verify(huge), /too large/);
    await expectInvalidToken(verifier.verify("a".repeat(20 * 1024)), /too large/);
    expect(idp.jwksRequests).toBe(before);
  });

  it("unknown kids cannot cause a JWKS refetch storm (cooldown)", async () => {
    const fresh = createTokenVerifier(
      resolveAuth({ provider: "auth0", issuer: `${idp.issuer}/`, audience: AUDIENCE, jwks_uri: idp.jwksUri }),
    );
    const before = idp.jwksRequests;
    const other = await idp.otherKeyPair();
    const tokens = await Promise.all(
      Array.from({ length: 20 }, () =>
        idp.sign(claims, { key: other.privateKey, header: { kid: randomBytes(8).toString("hex") } }),
      ),
    );
    for (const token of tokens) await expectInvalidToken(fresh.verify(token), /no matching key/);
    await Promise.all(tokens.map((token) => expectInvalidToken(fresh.verify(token))));
    expect(idp.jwksRequests - before).toBeLessThanOrEqual(2);
  });

  it("without a cooldown each unknown kid refetches (the control for the test above)", async () => {
    const eager = createTokenVerifier(
      resolveAuth({
        provider: "auth0",
        issuer: `${idp.issuer}/`,
        audience: AUDIENCE,
        jwks_uri: idp.jwksUri,
        jwks_cooldown_s: 0,
      }),
    );
    const before = idp.jwksRequests;
    for (let i = 0; i < 5; i++) {
      await expectInvalidToken(eager.verify(await idp.sign(claims, { header: { kid: `k${i}` } })));
    }
    expect(idp.jwksRequests - before).toBeGreaterThanOrEqual(5);
  });

  it("property: arbitrary strings are only ever refused with invalid_token", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string(),
          fc.tuple(fc.base64String(), fc.base64String(), fc.base64String()).map((parts) => parts.join(".")),
        ),
        async (token) => {
          await expectInvalidToken(verifier.verify(token));
        },
      ),
      { numRuns: 200 },
    );
  });

  it("property: a tampered token is refused, or (base64url slack bits) yields the same claims", async () => {
    const good = await idp.sign(claims);
    const original = await verifier.verify(good);
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    await fc.assert(
      fc.asyncProperty(fc.nat(good.length - 1), fc.constantFrom(...alphabet), async (at, ch) => {
        const tampered = good.slice(0, at) + ch + good.slice(at + 1);
        try {
          const result = await verifier.verify(tampered);
          expect(result.claims).toEqual(original.claims);
        } catch (error) {
          expect(isTenantryError(error, "invalid_token")).toBe(true);
        }
      }),
      { numRuns: 200 },
    );
  });
});
