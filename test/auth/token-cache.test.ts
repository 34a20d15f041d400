import { createLocalJWKSet, type JWTVerifyGetKey } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TOKEN_CACHE_MAX_AGE_MS, TokenCache } from "../../src/auth/token-cache.js";
import { createTokenVerifier } from "../../src/auth/verifier.js";
import { startTestIssuer, type TestIssuer } from "../../src/testing/test-issuer.js";
import { AUDIENCE, expectInvalidToken, nowSeconds, resolveAuth } from "./helpers.js";

let idp: TestIssuer;
let claims: Record<string, unknown>;
beforeAll(async () => {
  idp = await startTestIssuer({ alg: "ES256" });
  claims = { iss: `${idp.issuer}/`, aud: AUDIENCE, sub: "auth0|u1", org_id: "org_a" };
});
afterAll(() => idp.close());

/** A verifier whose key lookups are counted: one lookup = one real verification. */
function countingVerifier(tokenCacheSize: number, now?: () => number) {
  const jwks = createLocalJWKSet({ keys: [idp.publicJwk] });
  const counter = { lookups: 0 };
  const keys: JWTVerifyGetKey = (header, token) => {
    counter.lookups++;
    return jwks(header, token);
  };
  const auth = resolveAuth({
    provider: "auth0",
    issuer: `${idp.issuer}/`,
    audience: AUDIENCE,
    jwks_uri: idp.jwksUri,
    algorithms: ["ES256"],
    token_cache_size: tokenCacheSize,
  });
  return { verifier: createTokenVerifier(auth, { keys, ...(now ? { now } : {}) }), counter };
}

describe("verified-token cache", () => {
  it("serves a repeated token without verifying it again", async () => {
    const { verifier, counter } = countingVerifier(100);
    const token = await idp.sign(claims);
    const first = await verifier.verify(token);
    for (let i = 0; i < 5; i++) expect(await verifier.verify(token)).toBe(first);
    expect(counter.lookups).toBe(1);
  });

  it("is off when token_cache_size = 0", async () => {
    const { verifier, counter } = countingVerifier(0);
    const token = await idp.sign(claims);
    for (let i = 0; i < 3; i++) await verifier.verify(token);
    expect(counter.lookups).toBe(3);
  });

  it("never serves an entry after the token's exp", async () => {
    let clock = Date.now();
    const { verifier, counter } = countingVerifier(100, () => clock);
    const exp = nowSeconds() + 60;
    const token = await idp.sign({ ...claims, exp });
    await verifier.verify(token);
    clock = exp * 1000 - 1;
    await verifier.verify(token);
    expect(counter.lookups).toBe(1);
    // Past exp but within the clock tolerance: verified afresh (and accepted), not served from cache.
    clock = exp * 1000 + 1;
    await verifier.verify(token);
    expect(counter.lookups).toBe(2);
    clock = exp * 1000 + 31_000;
    await expectInvalidToken(verifier.verify(token), /expired/);
    expect(counter.lookups).toBe(3);
  });

  it("keeps an entry at most five minutes even for a long-lived token", async () => {
    let clock = Date.now();
    const { verifier, counter } = countingVerifier(100, () => clock);
    const token = await idp.sign(claims, { expiresIn: 24 * 3600 });
    await verifier.verify(token);
    clock += TOKEN_CACHE_MAX_AGE_MS - 1;
    await verifier.verify(token);
    expect(counter.lookups).toBe(1);
    clock += 2;
    await verifier.verify(token);
    expect(counter.lookups).toBe(2);
  });

  it("is bounded: the oldest entry is evicted", async () => {
    const { verifier, counter } = countingVerifier(2);
    const [a, b, c] = await Promise.all([1, 2, 3].map((n) => idp.sign({ ...claims, n })));
    for (const t of [a, b, c]) await verifier.verify(t!);
    await verifier.verify(c!);
    await verifier.verify(b!);
    expect(counter.lookups).toBe(3);
    await verifier.verify(a!);
    expect(counter.lookups).toBe(4);
  });

  it("does not cache failures", async () => {
    const { verifier, counter } = countingVerifier(100);
    const other = await idp.otherKeyPair();
    const forged = await idp.sign(claims, { key: other.privateKey });
    await expectInvalidToken(verifier.verify(forged));
    await expectInvalidToken(verifier.verify(forged));
    expect(counter.lookups).toBe(2);
  });

  it("hands out deep-frozen results, so one request cannot alter another's claims", async () => {
    const { verifier } = countingVerifier(100);
    const token = await idp.sign({ ...claims, org: { id: "org_a" }, permissions: ["a"] });
    const verified = await verifier.verify(token);
    expect(() => {
      (verified.claims.org as Record<string, unknown>).id = "org_b";
    }).toThrow(TypeError);
    expect(() => (verified.scopes as string[]).push("admin:global")).toThrow(TypeError);
    expect((await verifier.verify(token)).claims.org).toEqual({ id: "org_a" });
  });

  it("TokenCache keys are hashes, not tokens", () => {
    const cache = new TokenCache<number>(10);
    const key = TokenCache.keyOf("secret.token.value");
    expect(key).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(key).not.toContain("secret");
    cache.set(key, 1, 2000, 1000);
    expect(cache.get(key, 1999)).toBe(1);
    expect(cache.get(key, 2000)).toBeUndefined();
    expect(cache.size).toBe(0);
    cache.set(key, 1, 500, 1000);
    expect(cache.size).toBe(0);
  });
});
