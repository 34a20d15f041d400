/**
 * `tenantry/testing`: helpers for proving tenant isolation in your own test suites.
 * @packageDocumentation
 */
export {
  type Harness,
  type HarnessOptions,
  type HarnessTenant,
  type HarnessTenantSpec,
  startHarness,
} from "./harness.js";
export {
  type SignOptions,
  startTestIssuer,
  type TestIssuer,
  type TestIssuerAlg,
  type TestIssuerOptions,
  type TestKeyPair,
} from "./test-issuer.js";
