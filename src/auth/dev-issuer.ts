import { randomUUID } from "node:crypto";
import { link, mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  type CryptoKey,
  calculateJwkThumbprint,
  createLocalJWKSet,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTVerifyGetKey,
  SignJWT,
} from "jose";
import { TenantryError } from "../errors.js";
import { assertTenantId } from "../tenancy/tenant-id.js";

/** The file, inside the data directory, that holds the dev issuer's private key. */
export const DEV_KEY_FILE = "dev-issuer-key.json";
const ALG = "ES256";

/** The `dev` provider's signing key and the matching public key set. */
export interface DevKeys {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: Readonly<JWK>;
  /** The public JWKS document, as served at the dev issuer's `jwks_uri`. */
  jwks(): { keys: JWK[] };
  /** A key resolver for `createTokenVerifier(auth, { keys })`. */
  readonly keySet: JWTVerifyGetKey;
}

interface KeyFile {
  kid: string;
  privateJwk: JWK;
}

function isKeyFile(value: unknown): value is KeyFile {
  if (typeof value !== "object" || value === null) return false;
  const { kid, privateJwk } = value as Record<string, unknown>;
  return typeof kid === "string" && typeof privateJwk === "object" && privateJwk !== null;
}

async function devKeysFrom(file: KeyFile): Promise<DevKeys> {
  const privateKey = (await importJWK({ ...file.privateJwk, alg: ALG }, ALG)) as CryptoKey;
  const { kty, crv, x, y } = file.privateJwk;
  // Built field by field so the private `d` can never leak into the published key.
  const publicJwk: JWK = Object.freeze({ kty, crv, x, y, kid: file.kid, alg: ALG, use: "sig" });
  const keySet = createLocalJWKSet({ keys: [publicJwk] });
  return { kid: file.kid, privateKey, publicJwk, jwks: () => ({ keys: [{ ...publicJwk }] }), keySet };
}

async function readKeyFile(path: string): Promise<KeyFile | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new TenantryError("config_invalid", `${path}: not a dev issuer key file`, { cause: error });
  }
  if (!isKeyFile(parsed)) throw new TenantryError("config_invalid", `${path}: not a dev issuer key file`);
  return parsed;
}

/**
 * Loads the dev issuer's ES256 key from `<dataDir>/dev-issuer-key.json`, creating it (mode 0600)
 * on first start so that tokens printed by `tenantry dev` keep working across restarts. Creation
 * writes a temporary file and hard-links it into place, so two processes starting at once agree
 * on one key and neither can read a half-written file.
 */
export async function loadOrCreateDevKeys(dataDir: string): Promise<DevKeys> {
  const path = join(dataDir, DEV_KEY_FILE);
  const existing = await readKeyFile(path);
  if (existing) return devKeysFrom(existing);

  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const { privateKey } = await generateKeyPair(ALG, { extractable: true });
  const privateJwk = await exportJWK(privateKey);
  const { kty, crv, x, y } = privateJwk;
  const kid = await calculateJwkThumbprint({ kty, crv, x, y } as JWK);
  const file: KeyFile = { kid, privateJwk };
  const tmp = `${path}.${process.pid}.${randomUUID()}.tmp`;
  await writeFile(tmp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600, flag: "wx" });
  try {
    await link(tmp, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    const winner = await readKeyFile(path);
    if (winner) return devKeysFrom(winner);
    throw error;
  } finally {
    await unlink(tmp).catch(() => {});
  }
  return devKeysFrom(file);
}

/** What a dev token says. Tenants use Auth0's claim names (`org_id`, `org_name`). */
export interface DevTokenOptions {
  issuer: string;
  audience: string | string[];
  tenantId?: string;
  tenantName?: string;
  sub: string;
  scopes: readonly string[];
  ttlSeconds: number;
  /** Added first, so they cannot override the claims above. */
  extraClaims?: Record<string, unknown>;
}

/**
 * Mints a compact ES256 JWT from the dev issuer (`tenantry token`, `tenantry dev`).
 *
 * @example
 * const token = await mintDevToken(keys, {
 *   issuer: "http://localhost:8080/dev-issuer", audience: "http://localhost:8080",
 *   tenantId: "acme", sub: "alice", scopes: ["notes:read"], ttlSeconds: parseDuration("1h"),
 * });
 */
export async function mintDevToken(keys: DevKeys, options: DevTokenOptions): Promise<string> {
  if (!Number.isSafeInteger(options.ttlSeconds) || options.ttlSeconds <= 0) {
    throw new TenantryError(
      "invalid_argument",
      `ttl must be a positive number of seconds, not ${options.ttlSeconds}`,
    );
  }
  if (options.sub === "") throw new TenantryError("invalid_argument", "sub must not be empty");
  const claims: Record<string, unknown> = { ...options.extraClaims, scope: options.scopes.join(" ") };
  if (options.tenantId !== undefined) claims.org_id = assertTenantId(options.tenantId);
  if (options.tenantName !== undefined) claims.org_name = options.tenantName;
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: ALG, kid: keys.kid, typ: "JWT" })
    .setIssuer(options.issuer)
    .setAudience(options.audience)
    .setSubject(options.sub)
    .setIssuedAt(now)
    .setExpirationTime(now + options.ttlSeconds)
    .setJti(randomUUID())
    .sign(keys.privateKey);
}

const DURATION = /^(\d{1,9})([smhd]?)$/;
const UNIT_SECONDS: Record<string, number> = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 };

/**
 * Parses a CLI duration: `"45s"`, `"30m"`, `"1h"`, `"2d"`, or bare seconds (`"3600"`).
 * Zero, negatives, fractions and other units are `invalid_argument`.
 */
export function parseDuration(text: string): number {
  const match = DURATION.exec(text.trim());
  const seconds = match ? Number(match[1]) * UNIT_SECONDS[match[2] ?? ""]! : 0;
  if (!match || seconds <= 0) {
    throw new TenantryError(
      "invalid_argument",
      `invalid duration ${JSON.stringify(text)}: use e.g. 45s, 30m, 1h, 2d`,
    );
  }
  return seconds;
}
