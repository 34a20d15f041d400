/**
 * Who is calling, as the verified token says. Built once per request by `identify`, frozen, and
 * handed to every later stage and to tool code. Tool code cannot construct a context for another
 * tenant: handles such as `ctx.db` and `ctx.storage` are bound to it when they are created.
 */
export interface TenantContext {
  readonly tenantId: string;
  readonly tenantName: string | undefined;
  readonly userId: string;
  readonly scopes: readonly string[];
  readonly issuer: string;
  /** Set when a global admin acts as this tenant: the admin's id and the reason given. */
  readonly impersonation?: { readonly adminId: string; readonly reason: string; readonly expiresAt: number };
}

/** The scope a request acts in: one tenant, or (global admins only) every tenant. */
export type TenantScope =
  | { readonly kind: "tenant"; readonly tenant: TenantContext }
  | {
      readonly kind: "global";
      readonly adminId: string;
      readonly issuer: string;
      readonly scopes: readonly string[];
    };
