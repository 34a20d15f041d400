import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DEV_KEY_FILE, loadOrCreateDevKeys, mintDevToken, parseDuration } from "../../src/auth/dev-issuer.js";
import { createTokenVerifier } from "../../src/auth/verifier.js";
import { isTenantryError } from "../../src/errors.js";
import { resolveAuth } from "./helpers.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "tenantry-dev-issuer-"));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const base = { issuer: "http://127.0.0.1:8080/dev-issuer", audience: "http://127.0.0.1:8080", sub: "alice" };

describe("dev issuer keys", () => {
  it("creates the key file with mode 0600 and reuses it on the next start", async () => {
    const nested = join(dir, "data");
    const first = await loadOrCreateDevKeys(nested);
    const file = join(nested, DEV_KEY_FILE);
    if (process.platform !== "win32") expect((await stat(file)).mode & 0o777).toBe(0o600);
    const token = await mintDevToken(first, { ...base, scopes: [], ttlSeconds: 60 });

    const second = await loadOrCreateDevKeys(nested);
    expect(second.kid).toBe(first.kid);
    const verifier = createTokenVerifier(resolveAuth({ provider: "dev" }), { keys: second.keySet });
    expect((await verifier.verify(token)).subject).toBe("alice");
    expect(JSON.parse(await readFile(file, "utf8")).kid).toBe(first.kid);
  });

  it("two processes starting at once agree on one key", async () => {
    const all = await Promise.all([1, 2, 3, 4].map(() => loadOrCreateDevKeys(dir)));
    expect(new Set(all.map((k) => k.kid)).size).toBe(1);
  });

  it("publishes only the public key", async () => {
    const keys = await loadOrCreateDevKeys(dir);
    expect(keys.publicJwk).toMatchObject({
      kty: "EC",
      crv: "P-256",
      kid: keys.kid,
      alg: "ES256",
      use: "sig",
    });
    expect(keys.publicJwk).not.toHaveProperty("d");
    expect(keys.jwks().keys).toEqual([keys.publicJwk]);
    expect(keys.jwks().keys[0]).not.toHaveProperty("d");
  });

  it("refuses a corrupt key file instead of replacing it", async () => {
    await writeFile(join(dir, DEV_KEY_FILE), "{ nope");
    await expect(loadOrCreateDevKeys(dir)).rejects.toMatchObject({ code: "config_invalid" });
  });
});

describe("mintDevToken", () => {
  it("mints an ES256 token with Auth0-style tenant claims and a space-separated scope", async () => {
    const keys = await loadOrCreateDevKeys(dir);
    const token = await mintDevToken(keys, {
      ...base,
      tenantId: "org_AbC",
      tenantName: "Acme",
      scopes: ["notes:read", "notes:write"],
      ttlSeconds: 3600,
      extraClaims: { plan: "pro", sub: "mallory", org_id: "other" },
    });
    expect(decodeProtectedHeader(token)).toMatchObject({ alg: "ES256", kid: keys.kid, typ: "JWT" });
    const claims = decodeJwt(token);
    expect(claims).toMatchObject({
      iss: base.issuer,
      aud: base.audience,
      sub: "alice",
      org_id: "org_AbC",
      org_name: "Acme",
      scope: "notes:read notes:write",
      plan: "pro",
    });
    expect(claims.exp! - claims.iat!).toBe(3600);
    expect(typeof claims.jti).toBe("string");
  });

  it("rejects bad tenant ids and ttls", async () => {
    const keys = await loadOrCreateDevKeys(dir);
    await expect(
      mintDevToken(keys, { ...base, tenantId: "a/b", scopes: [], ttlSeconds: 60 }),
    ).rejects.toMatchObject({ code: "invalid_tenant_id" });
    for (const ttlSeconds of [0, -1, 1.5, Number.NaN]) {
      await expect(mintDevToken(keys, { ...base, scopes: [], ttlSeconds })).rejects.toMatchObject({
        code: "invalid_argument",
      });
    }
  });
});

describe("parseDuration", () => {
  it.each([
    ["45s", 45],
    ["30m", 1800],
    ["1h", 3600],
    ["2d", 172_800],
    ["3600", 3600],
    [" 1h ", 3600],
  ])("%j → %d seconds", (text, seconds) => {
    expect(parseDuration(text)).toBe(seconds);
  });

  it.each(["", "0", "0s", "-1h", "1.5h", "1w", "h", "1 h", "1hh", "99999999999"])(
    "%j is invalid_argument",
    (text) => {
      let error: unknown;
      try {
        parseDuration(text);
      } catch (e) {
        error = e;
      }
      expect(isTenantryError(error, "invalid_argument")).toBe(true);
    },
  );
});
