import { type JWTPayload, type JWTVerifyOptions, jwtVerify } from "jose";
import type { ResolvedAuth } from "../config/resolve.js";
import { isTenantryError, TenantryError } from "../errors.js";
import { readClaim, readScopes } from "./claims.js";
import { createKeySource, idpUnavailable, type KeyInput } from "./key-source.js";
import { TokenCache } from "./token-cache.js";

export type { KeyInput } from "./key-source.js";

/** What the authenticate stage hands to identify: a token whose signature and claims checked out. */
export interface VerifiedToken {
  readonly issuer: string;
  readonly subject: string;
  /** `auth.userClaim` (Entra: `oid`) when it is a non-empty string, else `sub`. */
  readonly userId: string;
  readonly scopes: readonly string[];
  /** The whole payload, deep-frozen: cached results are shared between requests. */
  readonly claims: Readonly<Record<string, unknown>>;
  /** `exp`, in epoch seconds. */
  readonly expiresAt: number;
}

/**
 * Verifies bearer tokens. A refused token is a `TenantryError` with code `invalid_token`; an
 * identity provider whose metadata or keys cannot be fetched, `service_unavailable`.
 */
export interface TokenVerifier {
  verify(token: string): Promise<VerifiedToken>;
  /**
   * The result of an earlier successful `verify` of this exact token, with the time (epoch ms, the
   * verifier's clock) until which it may be trusted; `undefined` otherwise (then call `verify`).
   * The request path's synchronous fast path.
   */
  cachedUntil(token: string): { readonly value: VerifiedToken; readonly until: number } | undefined;
  /** The verifier's clock, epoch milliseconds. */
  now(): number;
}

export interface VerifierOptions {
  /** A local key or key set used instead of a remote JWKS (the `dev` provider's issuer, tests). */
  keys?: KeyInput;
  /** Used for JWKS and discovery requests (defaults to the global `fetch`). */
  fetchImpl?: typeof fetch;
  /** The current time in epoch **milliseconds** (defaults to `Date.now`); for tests. */
  now?: () => number;
}

/** Three non-empty base64url segments. Checked before jose sees the token so junk costs a regex. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function invalid(reason: string, cause?: unknown): TenantryError {
  return new TenantryError("invalid_token", reason, { cause });
}

/** Short, stable reasons for jose's failures; the jose error stays available as `cause`. */
function reasonFor(error: unknown): string {
  const { code, claim } = (error ?? {}) as { code?: unknown; claim?: unknown };
  switch (code) {
    case "ERR_JWT_EXPIRED":
      return "token expired";
    case "ERR_JWT_CLAIM_VALIDATION_FAILED":
      if (claim === "aud") return "token not issued for this server (aud)";
      if (claim === "nbf") return "token not yet valid (nbf)";
      return `claim "${String(claim)}" is missing or invalid`;
    case "ERR_JOSE_ALG_NOT_ALLOWED":
      return "signing algorithm not allowed";
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return "bad signature";
    case "ERR_JWKS_NO_MATCHING_KEY":
    case "ERR_JWKS_MULTIPLE_MATCHING_KEYS":
      return "no matching key in the issuer's key set";
    case "ERR_JWS_INVALID":
    case "ERR_JWT_INVALID":
    case "ERR_JOSE_NOT_SUPPORTED":
      return "malformed token";
    default:
      return "token could not be verified";
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/**
 * Checks `iss` exactly. Entra multi-tenant templates contain `{tid}`: the token's own `tid` (a
 * GUID) is substituted, so a token is accepted only if its issuer names the same directory as its
 * `tid` claim — the check Microsoft documents for multi-tenant apps. `templated` says the issuer
 * matched only through a template, i.e. it may be any directory at all.
 */
function issuerCheck(
  issuers: readonly string[],
): (payload: JWTPayload) => { iss: string; templated: boolean } {
  const fixed = new Set(issuers.filter((i) => !i.includes("{tid}")));
  const templates = issuers.filter((i) => i.includes("{tid}"));
  return (payload) => {
    const iss = payload.iss;
    if (typeof iss !== "string") throw invalid("token has no issuer (iss)");
    if (fixed.has(iss)) return { iss, templated: false };
    if (templates.length > 0) {
      const tid = payload.tid;
      if (typeof tid !== "string" || !GUID.test(tid)) throw invalid("tid claim is not a GUID");
      for (const template of templates) {
        if (template.replaceAll("{tid}", tid) === iss) return { iss, templated: true };
      }
    }
    throw invalid("issuer not accepted (iss)");
  };
}

/**
 * Creates the verifier for one resolved auth config. Options and key sources are built once here;
 * `verify` does a length check, a cache lookup, a shape regex, then jose.
 *
 * Refused: oversized or malformed tokens; any `alg` outside `auth.algorithms` (so `none` and
 * HS256 keyed with the RSA public key); `jku`/`x5u`/`jwk`/`x5c` headers; unknown `kid`s; wrong
 * `iss`; wrong `aud` (RFC 8707) — for Cognito, instead, `token_use` other than `access` or another
 * `client_id`; missing `exp` or `sub`; `exp`/`nbf` outside `auth.clockToleranceSeconds`.
 * Not refused, but without the admin scope: a token whose issuer matched only a `{tid}` template.
 *
 * @example
 * const verifier = createTokenVerifier(config.resolvedAuth);
 * const { userId, scopes } = await verifier.verify(bearer);
 */
export function createTokenVerifier(auth: ResolvedAuth, options: VerifierOptions = {}): TokenVerifier {
  const cognito = auth.provider === "cognito";
  if (auth.issuers.length === 0) throw new TenantryError("config_invalid", "auth: no issuer configured");
  if (cognito && auth.clientId === undefined)
    throw new TenantryError("config_invalid", "auth: cognito needs client_id");
  if (!cognito && auth.audiences.length === 0) {
    throw new TenantryError(
      "config_invalid",
      "auth: no audience configured; tokens must be issued for this server",
    );
  }
  const customNow = options.now;
  const now = customNow ?? Date.now;
  const getKey = createKeySource(auth, { keys: options.keys, fetchImpl: options.fetchImpl, now });
  const checkIssuer = issuerCheck(auth.issuers);
  const cache = new TokenCache<VerifiedToken>(auth.tokenCacheSize);
  const baseOptions: JWTVerifyOptions = {
    algorithms: auth.algorithms,
    clockTolerance: auth.clockToleranceSeconds,
    requiredClaims: ["exp", "sub"],
    // Cognito access tokens carry no `aud`; `client_id` is checked below instead.
    ...(cognito ? {} : { audience: auth.audiences }),
  };

  function accept(payload: JWTPayload): VerifiedToken {
    const { iss: issuer, templated } = checkIssuer(payload);
    if (cognito) {
      if (payload.token_use !== "access") throw invalid("not an access token (token_use)");
      if (payload.client_id !== auth.clientId) throw invalid("token not issued for this client (client_id)");
    }
    const subject = payload.sub;
    if (typeof subject !== "string" || subject === "") throw invalid("token has no subject (sub)");
    const claims = deepFreeze(payload as Record<string, unknown>);
    const user = readClaim(claims, auth.userClaim);
    let scopes = readScopes(claims, auth.scopeClaims);
    // A `{tid}` template admits every directory, and each directory's own admins assign the app's
    // roles and consent to its scopes: anyone can make a directory that grants itself the admin
    // scope. It counts only in tokens from a fixed issuer (the operator's own directory).
    if (templated) scopes = scopes.filter((s) => s !== auth.adminScope);
    return Object.freeze({
      issuer,
      subject,
      userId: typeof user === "string" && user !== "" ? user : subject,
      scopes: Object.freeze(scopes),
      claims,
      expiresAt: payload.exp as number,
    });
  }

  return {
    now,
    cachedUntil(token: string) {
      if (!cache.enabled || typeof token !== "string" || token.length > auth.maxTokenBytes) return undefined;
      return cache.entry(TokenCache.keyOf(token), now());
    },
    async verify(token: string): Promise<VerifiedToken> {
      if (typeof token !== "string" || token === "") throw invalid("missing token");
      // Before hashing or parsing anything: an oversized token costs nothing.
      if (token.length > auth.maxTokenBytes) throw invalid("token too large");
      const at = now();
      const cacheKey = cache.enabled ? TokenCache.keyOf(token) : undefined;
      if (cacheKey !== undefined) {
        const hit = cache.get(cacheKey, at);
        if (hit !== undefined) return hit;
      }
      if (!COMPACT_JWS.test(token)) throw invalid("malformed token");
      let payload: JWTPayload;
      try {
        const verifyOptions = customNow ? { ...baseOptions, currentDate: new Date(at) } : baseOptions;
        ({ payload } = await jwtVerify(token, getKey, verifyOptions));
      } catch (error) {
        if (isTenantryError(error, "invalid_token") || isTenantryError(error, "service_unavailable"))
          throw error;
        const code = (error as { code?: unknown } | undefined)?.code;
        if (code === "ERR_JWKS_TIMEOUT" || code === "ERR_JWKS_INVALID") {
          throw idpUnavailable(
            code === "ERR_JWKS_TIMEOUT" ? "issuer key set unavailable (timeout)" : "issuer key set malformed",
            error,
          );
        }
        throw invalid(reasonFor(error), error);
      }
      const verified = accept(payload);
      if (cacheKey !== undefined) cache.set(cacheKey, verified, verified.expiresAt * 1000, at);
      return verified;
    },
  };
}
