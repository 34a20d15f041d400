import type { IncomingMessage } from "node:http";
import { IMPERSONATION_HEADER, type ImpersonationResolver } from "../admin/impersonation.js";
import type { TokenVerifier, VerifiedToken } from "../auth/verifier.js";
import type { ResolvedAuth } from "../config/resolve.js";
import { TenantryError } from "../errors.js";
import { admit } from "../tenancy/admission.js";
import type { TenantContext, TenantScope } from "../tenancy/context.js";
import { identify } from "../tenancy/identify.js";
import type { TenantRegistry } from "../tenancy/registry.js";
import type { TenantRecord } from "../tenancy/tenant.js";

/** A registry that cannot be read fails the request (503); it never lets it through. */
function registryUnavailable(cause: unknown): TenantryError {
  return new TenantryError("service_unavailable", "the tenant registry is unavailable", { cause });
}

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

/** Who the request turned out to be, filled in as soon as it is known (for the audit of denials). */
export interface Identified {
  scope?: TenantScope;
}

/**
 * authenticate → identify → (impersonate) → admit. Each stage only passes forward what the next
 * needs, and a stage that cannot decide denies: a registry that cannot be read fails the request
 * (503), it never lets the request through.
 *
 * Impersonation: a global admin's request carrying `X-Tenantry-Impersonate: <grant>` acts as the
 * grant's tenant, as user `admin:<adminId>` with `impersonation` set, and is admitted like any
 * request of that tenant. An unknown, expired or foreign grant, or the header on any other token,
 * is 403 `forbidden`.
 */
export class AdmissionPipeline {
  readonly #auth: ResolvedAuth;
  readonly #verifier: TokenVerifier;
  readonly #registry: TenantRegistry;
  readonly #impersonations: ImpersonationResolver | undefined;
  /**
   * The last token each connection presented, verified, with the time it may be trusted until
   * (the shared cache's own expiry). Held only while the connection is open, for that connection.
   */
  readonly #lastOnConnection = new WeakMap<
    object,
    { readonly header: string; readonly token: VerifiedToken; readonly until: number }
  >();
  readonly #scopes = new WeakMap<VerifiedToken, TenantScope>();

  constructor(
    auth: ResolvedAuth,
    verifier: TokenVerifier,
    registry: TenantRegistry,
    impersonations?: ImpersonationResolver,
  ) {
    this.#auth = auth;
    this.#verifier = verifier;
    this.#registry = registry;
    this.#impersonations = impersonations;
  }

  /**
   * Admits a request. Synchronous when every answer is in memory (a token verified before, a
   * cached tenant), a promise otherwise; either way a refusal is a thrown (or rejected) TenantryError.
   */
  admit(req: IncomingMessage, identified: Identified = {}): Admitted | Promise<Admitted> {
    if (!this.#auth.enabled) return this.#afterAuth(req, ANONYMOUS, identified);
    const header = req.headers.authorization;
    // A keep-alive connection sends the same header request after request: compare it with the
    // last one this connection presented before hashing it for the shared cache.
    const socket = req.socket;
    const last = socket ? this.#lastOnConnection.get(socket) : undefined;
    if (last !== undefined && last.header === header && this.#verifier.now() < last.until) {
      return this.#afterAuth(req, last.token, identified);
    }
    const token = bearerToken(header);
    const known = this.#verifier.cachedUntil(token);
    if (known !== undefined) {
      if (socket)
        this.#lastOnConnection.set(socket, { header: header!, token: known.value, until: known.until });
      return this.#afterAuth(req, known.value, identified);
    }
    return this.#verifier.verify(token).then((verified) => this.#afterAuth(req, verified, identified));
  }

  #afterAuth(
    req: IncomingMessage,
    token: VerifiedToken,
    identified: Identified,
  ): Admitted | Promise<Admitted> {
    // Claims → scope is a pure function of the (frozen, cached) verified token: derive it once.
    let scope = this.#scopes.get(token);
    if (scope === undefined) {
      scope = identify(token, this.#auth);
      this.#scopes.set(token, scope);
    }
    identified.scope = scope;
    const grant = req.headers[IMPERSONATION_HEADER];
    if (grant === undefined) return this.#admitScope(scope);
    return this.#impersonate(scope, grant).then((acting) => {
      identified.scope = acting;
      return this.#admitScope(acting);
    });
  }

  #admitScope(scope: TenantScope): Admitted | Promise<Admitted> {
    if (scope.kind === "global") return { scope, record: undefined };
    const id = scope.tenant.tenantId;
    let found: ReturnType<TenantRegistry["get"]>;
    try {
      found = this.#registry.get(id);
    } catch (error) {
      throw registryUnavailable(error);
    }
    if (!(found instanceof Promise)) return { scope, record: admit(id, found) };
    return found.then(
      (record) => ({ scope, record: admit(id, record) }),
      (error: unknown) => {
        throw registryUnavailable(error);
      },
    );
  }

  async #impersonate(scope: TenantScope, grant: string | string[]): Promise<TenantScope> {
    if (scope.kind !== "global" || !this.#impersonations) {
      throw new TenantryError("forbidden", "only a global admin can impersonate a tenant");
    }
    if (typeof grant !== "string") throw new TenantryError("forbidden", "one impersonation grant at most");
    const active = await this.#impersonations.resolve(grant, {
      adminId: scope.adminId,
      issuer: scope.issuer,
    });
    const tenant: TenantContext = Object.freeze({
      tenantId: active.tenantId,
      tenantName: undefined,
      userId: `admin:${scope.adminId}`,
      // The admin acts as a user of the tenant: its own scopes, minus the one that makes it global.
      scopes: Object.freeze(scope.scopes.filter((s) => s !== this.#auth.adminScope)),
      issuer: scope.issuer,
      impersonation: Object.freeze({
        adminId: scope.adminId,
        reason: active.reason,
        expiresAt: active.expiresAt,
      }),
    });
    return Object.freeze({ kind: "tenant", tenant });
  }
}
