import type { IncomingMessage } from "node:http";
import type { TokenVerifier, VerifiedToken } from "../auth/verifier.js";
import type { ResolvedAuth } from "../config/resolve.js";
import { TenantryError } from "../errors.js";
import { admit } from "../tenancy/admission.js";
import type { TenantScope } from "../tenancy/context.js";
import { identify } from "../tenancy/identify.js";
import type { TenantRegistry } from "../tenancy/registry.js";
import type { TenantRecord } from "../tenancy/tenant.js";

/** What authentication, identification and admission hand forward. */
export interface Admitted {
  readonly scope: TenantScope;
  readonly record: TenantRecord | undefined;
}

const ANONYMOUS: VerifiedToken = Object.freeze({
  issuer: "none",
  subject: "anonymous",
  userId: "anonymous",
  scopes: [],
  claims: {},
  expiresAt: Number.MAX_SAFE_INTEGER,
});

/** The bearer token of an `Authorization` header, or `invalid_token`. */
export function bearerToken(header: string | undefined): string {
  if (!header) throw new TenantryError("invalid_token", "no bearer token");
  if (header.length < 8 || header.slice(0, 7).toLowerCase() !== "bearer ") {
    throw new TenantryError("invalid_token", "the Authorization header is not a Bearer token");
  }
  const token = header.slice(7).trim();
  if (token.length === 0) throw new TenantryError("invalid_token", "empty bearer token");
  return token;
}

/**
 * authenticate → identify → admit. Each stage only passes forward what the next needs, and a
 * stage that cannot decide denies: a registry that cannot be read fails the request (503), it
 * never lets the request through.
 */
export class AdmissionPipeline {
  readonly #auth: ResolvedAuth;
  readonly #verifier: TokenVerifier;
  readonly #registry: TenantRegistry;

  constructor(auth: ResolvedAuth, verifier: TokenVerifier, registry: TenantRegistry) {
    this.#auth = auth;
    this.#verifier = verifier;
    this.#registry = registry;
  }

  async admit(req: IncomingMessage): Promise<Admitted> {
    const token = this.#auth.enabled
      ? await this.#verifier.verify(bearerToken(req.headers.authorization))
      : ANONYMOUS;
    const scope = identify(token, this.#auth);
    if (scope.kind === "global") return { scope, record: undefined };
    const id = scope.tenant.tenantId;
    let record: TenantRecord | undefined;
    try {
      record = await this.#registry.get(id);
    } catch (error) {
      throw new TenantryError("service_unavailable", "the tenant registry is unavailable", { cause: error });
    }
    return { scope, record: admit(id, record) };
  }
}
