/**
 * Reading claims out of a verified JWT payload. IdPs name claims in three ways: plain keys
 * (`org_id`), keys that contain separators (`custom:tenant_id`, `https://example.com/org`), and
 * nested objects (`org.id`). An exact key always wins, so a namespaced URL claim with dots in it is
 * never mistaken for a path.
 */

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

/**
 * Returns the value of the claim named `path`: the key itself if present, else a walk of the
 * dot-separated segments through nested objects. Only own properties are read, so paths such as
 * `__proto__` or `constructor` never reach the prototype chain. A name containing `/` is a
 * namespaced (URL) claim and is only ever read as an exact key: otherwise, when the IdP leaves it
 * out, `{"https://example": {"com/org": …}}` — say, from user-editable metadata — would stand in
 * for `https://example.com/org`.
 *
 * @example
 * readClaim({ "https://example.com/org": "acme" }, "https://example.com/org"); // "acme"
 * readClaim({ org: { id: "acme" } }, "org.id"); // "acme"
 */
export function readClaim(claims: Record<string, unknown>, path: string): unknown {
  if (Object.hasOwn(claims, path)) return claims[path];
  if (!path.includes(".") || path.includes("/")) return undefined;
  let current: unknown = claims;
  for (const segment of path.split(".")) {
    if (!isRecord(current) || !Object.hasOwn(current, segment)) return undefined;
    current = current[segment];
  }
  return current;
}

/**
 * Collects the scopes a token grants from every claim in `scopeClaims`. A claim may be an OAuth
 * space-separated string (`scope`, Entra `scp`) or an array of strings (Auth0 `permissions`, Entra
 * `roles`, Okta `scp`). The result is the union in first-seen order, without duplicates; anything
 * that is not a string is ignored rather than coerced, so `[{}]` can never become `"[object Object]"`.
 */
export function readScopes(claims: Record<string, unknown>, scopeClaims: readonly string[]): string[] {
  const scopes = new Set<string>();
  for (const name of scopeClaims) {
    const value = readClaim(claims, name);
    if (typeof value === "string") {
      for (const scope of value.split(/\s+/)) if (scope !== "") scopes.add(scope);
    } else if (Array.isArray(value)) {
      for (const scope of value) if (typeof scope === "string" && scope !== "") scopes.add(scope);
    }
  }
  return [...scopes];
}
