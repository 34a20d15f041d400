import type { KeyObject } from "node:crypto";
import {
  type CompactJWSHeaderParameters,
  type CryptoKey,
  createRemoteJWKSet,
  customFetch,
  type FlattenedJWSInput,
  type JWTVerifyGetKey,
} from "jose";
import type { ResolvedAuth } from "../config/resolve.js";
import { TenantryError } from "../errors.js";

/** Where verification keys come from: a local key or key set, or the IdP's JWKS. */
export type KeyInput = JWTVerifyGetKey | CryptoKey | KeyObject;

type KeyResolver = (
  header: CompactJWSHeaderParameters,
  token: FlattenedJWSInput,
) => ReturnType<JWTVerifyGetKey>;

export interface KeySourceOptions {
  keys?: KeyInput | undefined;
  fetchImpl?: typeof fetch | undefined;
  /** Epoch milliseconds; drives the discovery retry back-off. */
  now: () => number;
}

/**
 * Header parameters that name a key by reference or carry one inline. Honouring any of them lets
 * the token choose its own verification key, so a token that carries one is refused outright
 * rather than silently ignored: it is either broken or an attack.
 */
const HOSTILE_HEADERS = ["jku", "x5u", "jwk", "x5c"] as const;

const DISCOVERY_TIMEOUT_MS = 5000;
/** After a failed discovery, requests fail fast for this long instead of hammering the IdP. */
const DISCOVERY_RETRY_MS = 5000;

function invalid(reason: string, cause?: unknown): TenantryError {
  return new TenantryError("invalid_token", reason, { cause });
}

/** Seconds a client is told to wait when the identity provider cannot be reached. */
const IDP_RETRY_AFTER_S = 5;

/**
 * The identity provider's metadata or keys could not be had: not the token's fault, so not a 401
 * (a client would drop a good token and sign in again), but a 503 with Retry-After. Still a refusal.
 */
export function idpUnavailable(reason: string, cause?: unknown): TenantryError {
  return new TenantryError("service_unavailable", reason, {
    cause,
    details: { headers: { "Retry-After": String(IDP_RETRY_AFTER_S) } },
  });
}

/** `fetch` for jose's JWKS requests: a network failure or a non-200 answer is {@link idpUnavailable}. */
function jwksFetch(fetchImpl: typeof fetch | undefined): typeof fetch {
  return async (input, init) => {
    let response: Response;
    try {
      response = await (fetchImpl ?? globalThis.fetch)(input, init);
    } catch (error) {
      // jose turns its own timeout (an aborted request) into ERR_JWKS_TIMEOUT.
      if (
        (error as { name?: unknown })?.name === "TimeoutError" ||
        (error as { name?: unknown })?.name === "AbortError"
      ) {
        throw error;
      }
      throw idpUnavailable("issuer key set unavailable", error);
    }
    if (response.status !== 200) {
      throw idpUnavailable(`issuer key set unavailable (HTTP ${response.status})`);
    }
    return response;
  };
}

function remoteKeySet(jwksUri: string, auth: ResolvedAuth, fetchImpl: typeof fetch | undefined): KeyResolver {
  return createRemoteJWKSet(new URL(jwksUri), {
    cooldownDuration: auth.jwksCooldownSeconds * 1000,
    cacheMaxAge: auth.jwksCacheMaxAgeSeconds * 1000,
    [customFetch]: jwksFetch(fetchImpl),
  });
}

/** Fetches and checks the OpenID Provider metadata; returns its `jwks_uri`. */
async function discoverJwksUri(issuer: string, fetchImpl: typeof fetch): Promise<string> {
  const url = `${issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`;
  const response = await fetchImpl(url, {
    headers: { accept: "application/json" },
    redirect: "manual",
    signal: AbortSignal.timeout(DISCOVERY_TIMEOUT_MS),
  });
  if (response.status !== 200) throw new Error(`${url}: HTTP ${response.status}`);
  const doc: unknown = await response.json();
  if (typeof doc !== "object" || doc === null) throw new Error(`${url}: not a JSON object`);
  const { issuer: docIssuer, jwks_uri: jwksUri } = doc as Record<string, unknown>;
  // OpenID Connect Discovery 1.0 §4.3: a document naming another issuer must not be used, or a
  // compromised or misconfigured proxy could substitute another IdP's keys.
  if (docIssuer !== issuer) throw new Error(`${url}: issuer ${JSON.stringify(docIssuer)} is not ${issuer}`);
  if (typeof jwksUri !== "string") throw new Error(`${url}: no jwks_uri`);
  const parsed = new URL(jwksUri);
  const issuerProtocol = new URL(issuer).protocol;
  if (parsed.protocol !== "https:" && !(parsed.protocol === "http:" && issuerProtocol === "http:")) {
    throw new Error(`${url}: jwks_uri must be https`);
  }
  return jwksUri;
}

/** Resolves `jwks_uri` through discovery once, lazily; a failure is retried after a short back-off. */
function discoveredKeySet(auth: ResolvedAuth, options: KeySourceOptions): KeyResolver {
  const issuer = auth.issuers.find((i) => !i.includes("{tid}"));
  if (issuer === undefined) throw new TenantryError("config_invalid", "auth: discovery needs a fixed issuer");
  const fetchImpl = options.fetchImpl ?? globalThis.fetch;
  let pending: Promise<KeyResolver> | undefined;
  let failedAt = Number.NEGATIVE_INFINITY;
  let lastError: unknown;

  const resolver = (): Promise<KeyResolver> => {
    if (pending) return pending;
    if (options.now() - failedAt < DISCOVERY_RETRY_MS) {
      return Promise.reject(idpUnavailable("issuer metadata unavailable", lastError));
    }
    pending = discoverJwksUri(issuer, fetchImpl).then(
      (jwksUri) => remoteKeySet(jwksUri, auth, options.fetchImpl),
      (error: unknown) => {
        pending = undefined;
        failedAt = options.now();
        lastError = error;
        throw idpUnavailable("issuer metadata unavailable", error);
      },
    );
    return pending;
  };
  return async (header, token) => (await resolver())(header, token);
}

/**
 * Builds the key function handed to `jwtVerify`. jose checks `alg` against the allow-list before
 * it calls this, so a refused algorithm never causes a JWKS fetch; this wrapper adds the refusal
 * of key-carrying header parameters, which costs nothing extra because jose has already parsed
 * the header.
 */
export function createKeySource(auth: ResolvedAuth, options: KeySourceOptions): JWTVerifyGetKey {
  let resolve: KeyResolver;
  const keys = options.keys;
  if (typeof keys === "function") resolve = keys;
  else if (keys !== undefined) resolve = async () => keys;
  else if (auth.jwksUri !== undefined) resolve = remoteKeySet(auth.jwksUri, auth, options.fetchImpl);
  else if (auth.discovery) resolve = discoveredKeySet(auth, options);
  else {
    throw new TenantryError(
      "config_invalid",
      `auth: provider ${auth.provider} has no key source (jwks_uri or keys)`,
    );
  }
  return (header, token) => {
    for (const name of HOSTILE_HEADERS) {
      if (header[name] !== undefined)
        throw invalid(`token header carries "${name}"; keys come only from the issuer`);
    }
    return resolve(header, token);
  };
}
