import { type KeyObject, randomBytes, randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  type CryptoKey,
  exportJWK,
  generateKeyPair,
  type JWK,
  type JWTHeaderParameters,
  SignJWT,
} from "jose";

/** Signing algorithms the test issuer can use. */
export type TestIssuerAlg = "RS256" | "ES256";

export interface TestIssuerOptions {
  /** Defaults to RS256, which Auth0, Entra, Cognito and Okta all use. */
  alg?: TestIssuerAlg;
  /** Interface to listen on; defaults to 127.0.0.1. */
  host?: string;
}

/** A key pair that is not in the issuer's JWKS, for "signed by someone else" tests. */
export interface TestKeyPair {
  kid: string;
  alg: TestIssuerAlg;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

export interface SignOptions {
  /** Merged over `{ alg, kid, typ: "JWT" }`; set `alg`/`kid` here to forge headers. */
  header?: Partial<JWTHeaderParameters> & Record<string, unknown>;
  /** Seconds until `exp` (default 3600). A claim `exp`/`iat` given explicitly wins. */
  expiresIn?: number;
  /** Sign with this key instead of the issuer's (another pair, or HMAC bytes with `header.alg`). */
  key?: CryptoKey | KeyObject | Uint8Array;
}

/** A running issuer; every token helper returns a compact JWT shaped like the IdP's own. */
export interface TestIssuer {
  /** `http://127.0.0.1:<port>`, no trailing slash. */
  readonly issuer: string;
  readonly jwksUri: string;
  readonly kid: string;
  readonly publicJwk: JWK;
  readonly privateKey: CryptoKey;
  /** `auth.issuer` values that make Entra templates point here: v2 `<issuer>/{tid}/v2.0`, v1 `<issuer>/{tid}/`. */
  readonly entraIssuerTemplates: readonly [string, string];
  /** How many times `/.well-known/jwks.json` was fetched. */
  readonly jwksRequests: number;
  /** How many times `/.well-known/openid-configuration` was fetched. */
  readonly discoveryRequests: number;
  sign(claims: Record<string, unknown>, options?: SignOptions): Promise<string>;
  auth0Token(options: {
    orgId?: string;
    orgName?: string;
    sub?: string;
    audience: string | string[];
    scope?: string;
    permissions?: string[];
    issuer?: string;
  }): Promise<string>;
  entraToken(options: {
    tid: string;
    oid?: string;
    audience: string;
    scp?: string;
    roles?: string[];
    version?: 1 | 2;
    issuer?: string;
  }): Promise<string>;
  cognitoAccessToken(options: {
    tenantId?: string;
    clientId: string;
    scope?: string;
    sub?: string;
    issuer?: string;
  }): Promise<string>;
  cognitoIdToken(options: {
    tenantId?: string;
    clientId: string;
    sub?: string;
    issuer?: string;
  }): Promise<string>;
  /** A fresh key pair of the issuer's algorithm that its JWKS does not contain. */
  otherKeyPair(): Promise<TestKeyPair>;
  close(): Promise<void>;
}

async function newKeyPair(alg: TestIssuerAlg): Promise<TestKeyPair> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const kid = randomBytes(8).toString("hex");
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { kid, alg, privateKey, publicJwk };
}

function listen(server: Server, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => resolve(server.address() as AddressInfo));
  });
}

const epoch = (): number => Math.floor(Date.now() / 1000);
const pairwiseId = (): string => randomBytes(32).toString("base64url").slice(0, 43);

/**
 * Starts a local OpenID issuer for tests: a JWKS and a discovery document on a random port of
 * 127.0.0.1, and helpers that mint tokens shaped like Auth0, Entra (v1/v2) and Cognito tokens.
 *
 * @example
 * const idp = await startTestIssuer();
 * const config = parseConfig({ auth: { provider: "auth0", issuer: `${idp.issuer}/`,
 *   audience: "https://mcp.example.com", jwks_uri: idp.jwksUri } });
 * const token = await idp.auth0Token({ orgId: "org_abc", audience: "https://mcp.example.com" });
 * // … call the server with `Authorization: Bearer ${token}` …
 * await idp.close();
 */
export async function startTestIssuer(options: TestIssuerOptions = {}): Promise<TestIssuer> {
  const alg = options.alg ?? "RS256";
  const host = options.host ?? "127.0.0.1";
  const own = await newKeyPair(alg);
  let jwksRequests = 0;
  let discoveryRequests = 0;
  let issuer = "";

  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    let body: unknown;
    if (req.method === "GET" && path === "/.well-known/jwks.json") {
      jwksRequests++;
      body = { keys: [own.publicJwk] };
    } else if (req.method === "GET" && path === "/.well-known/openid-configuration") {
      discoveryRequests++;
      body = {
        issuer,
        jwks_uri: `${issuer}/.well-known/jwks.json`,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/oauth/token`,
        response_types_supported: ["code"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: [alg],
      };
    }
    res.writeHead(body === undefined ? 404 : 200, { "content-type": "application/json" });
    res.end(JSON.stringify(body ?? { error: "not_found" }));
  });
  const address = await listen(server, host);
  const hostPart = address.family === "IPv6" ? `[${address.address}]` : address.address;
  issuer = `http://${hostPart}:${address.port}`;

  async function sign(claims: Record<string, unknown>, signOptions: SignOptions = {}): Promise<string> {
    const now = epoch();
    const payload = { iat: now, exp: now + (signOptions.expiresIn ?? 3600), ...claims };
    const header = { alg, kid: own.kid, typ: "JWT", ...signOptions.header } as JWTHeaderParameters;
    return new SignJWT(payload).setProtectedHeader(header).sign(signOptions.key ?? own.privateKey);
  }

  const handle: TestIssuer = {
    issuer,
    jwksUri: `${issuer}/.well-known/jwks.json`,
    kid: own.kid,
    publicJwk: own.publicJwk,
    privateKey: own.privateKey,
    entraIssuerTemplates: [`${issuer}/{tid}/v2.0`, `${issuer}/{tid}/`],
    get jwksRequests() {
      return jwksRequests;
    },
    get discoveryRequests() {
      return discoveryRequests;
    },
    sign,
    auth0Token(o) {
      const iss = o.issuer ?? `${issuer}/`;
      const claims: Record<string, unknown> = {
        iss,
        sub: o.sub ?? `auth0|${randomBytes(12).toString("hex")}`,
        aud: typeof o.audience === "string" ? [o.audience, `${iss}userinfo`] : o.audience,
        azp: randomBytes(16).toString("base64url"),
        scope: o.scope ?? "openid profile",
      };
      if (o.permissions) claims.permissions = o.permissions;
      if (o.orgId !== undefined) claims.org_id = o.orgId;
      if (o.orgName !== undefined) claims.org_name = o.orgName;
      return sign(claims);
    },
    entraToken(o) {
      const v1 = o.version === 1;
      const now = epoch();
      const claims: Record<string, unknown> = {
        aud: o.audience,
        iss: o.issuer ?? (v1 ? `${issuer}/${o.tid}/` : `${issuer}/${o.tid}/v2.0`),
        nbf: now,
        oid: o.oid ?? randomUUID(),
        sub: pairwiseId(),
        tid: o.tid,
        ver: v1 ? "1.0" : "2.0",
        ...(v1 ? { appid: randomUUID(), upn: "ada@contoso.com" } : { azp: randomUUID(), azpacr: "0" }),
      };
      if (o.scp !== undefined) claims.scp = o.scp;
      if (o.roles !== undefined) claims.roles = o.roles;
      return sign(claims);
    },
    cognitoAccessToken(o) {
      const claims: Record<string, unknown> = {
        sub: o.sub ?? randomUUID(),
        iss: o.issuer ?? issuer,
        version: 2,
        client_id: o.clientId,
        origin_jti: randomUUID(),
        event_id: randomUUID(),
        token_use: "access",
        scope: o.scope ?? "openid",
        auth_time: epoch(),
        jti: randomUUID(),
        username: "ada",
      };
      if (o.tenantId !== undefined) claims["custom:tenant_id"] = o.tenantId;
      return sign(claims);
    },
    cognitoIdToken(o) {
      const claims: Record<string, unknown> = {
        sub: o.sub ?? randomUUID(),
        aud: o.clientId,
        iss: o.issuer ?? issuer,
        token_use: "id",
        "cognito:username": "ada",
        email: "ada@example.com",
        email_verified: true,
        auth_time: epoch(),
        origin_jti: randomUUID(),
      };
      if (o.tenantId !== undefined) claims["custom:tenant_id"] = o.tenantId;
      return sign(claims);
    },
    otherKeyPair: () => newKeyPair(alg),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        // fetch keeps connections alive; without this close() would wait for them to time out.
        server.closeAllConnections();
      }),
  };
  return handle;
}
