import { readClaim } from "../auth/claims.js";
import type { VerifiedToken } from "../auth/verifier.js";
import type { ResolvedAuth } from "../config/resolve.js";
import { TenantryError } from "../errors.js";
import type { TenantContext, TenantScope } from "./context.js";
import { isValidTenantId } from "./tenant-id.js";

/**
 * Claims → scope. A token carrying the admin scope acts globally; any other must name its tenant
 * in the configured claim, taken as the IdP wrote it (case-sensitive, never filtered).
 * With multi-tenancy disabled every caller belongs to the single tenant `default`.
 */
export function identify(token: VerifiedToken, auth: ResolvedAuth): TenantScope {
  if (token.scopes.includes(auth.adminScope)) {
    return Object.freeze({
      kind: "global",
      adminId: token.userId,
      issuer: token.issuer,
      scopes: token.scopes,
    });
  }
  let tenantId: unknown = "default";
  let tenantName: unknown;
  if (auth.multiTenant) {
    tenantId = readClaim(token.claims, auth.tenantClaim);
    if (tenantId === undefined || tenantId === null || tenantId === "") {
      throw new TenantryError("missing_tenant", `the token has no ${auth.tenantClaim} claim`);
    }
    if (!isValidTenantId(tenantId)) {
      // Hostile or unexpected shape: refuse without echoing it back.
      throw new TenantryError(
        "unknown_tenant",
        `the token's ${auth.tenantClaim} claim is not a valid tenant id`,
      );
    }
    if (auth.tenantNameClaim) tenantName = readClaim(token.claims, auth.tenantNameClaim);
  }
  const tenant: TenantContext = Object.freeze({
    tenantId: tenantId as string,
    tenantName: typeof tenantName === "string" ? tenantName : undefined,
    userId: token.userId,
    scopes: token.scopes,
    issuer: token.issuer,
  });
  return Object.freeze({ kind: "tenant", tenant });
}
