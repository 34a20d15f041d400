import { expect } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import type { ResolvedAuth } from "../../src/config/resolve.js";
import { isTenantryError } from "../../src/errors.js";

export const AUDIENCE = "https://mcp.example.com";
export const ENTRA_AUDIENCE = "api://6e74172b-be56-4843-9ff4-e66a39bb12e3";
export const TID = "72f988bf-86f1-41af-91ab-2d7cd011db47";
export const OTHER_TID = "0b5a1d5c-3f2e-4e8a-9c7d-1a2b3c4d5e6f";
export const COGNITO_CLIENT = "3n4b5urk1ft4fl3mg5e62d9ado";

/** Resolves an `[auth]` table the way `tenantry.toml` would be (no environment interpolation). */
export function resolveAuth(auth: Record<string, unknown>): ResolvedAuth {
  return parseConfig({ auth }, "test.toml", {}).resolvedAuth;
}

/** Asserts that `promise` rejects with a TenantryError whose code is invalid_token. */
export async function expectInvalidToken(promise: Promise<unknown>, reason?: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected verify() to reject").toBeDefined();
  expect(isTenantryError(error, "invalid_token"), `expected invalid_token, got ${String(error)}`).toBe(true);
  if (reason) expect((error as Error).message).toMatch(reason);
}

export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** Asserts that `promise` rejects with `service_unavailable` (the IdP could not be reached), carrying Retry-After. */
export async function expectIdpUnavailable(promise: Promise<unknown>, reason?: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected verify() to reject").toBeDefined();
  expect(
    isTenantryError(error, "service_unavailable"),
    `expected service_unavailable, got ${String(error)}`,
  ).toBe(true);
  expect((error as { details: { headers?: Record<string, string> } }).details.headers?.["Retry-After"]).toBe(
    "5",
  );
  if (reason) expect((error as Error).message).toMatch(reason);
}
