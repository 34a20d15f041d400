import type { Logger } from "pino";
import type { QueryResult, Row } from "../db/database.js";
import type { TenantContext } from "../tenancy/context.js";
import type { TenantRecord } from "../tenancy/tenant.js";

/** The tenant-bound database handle tools get. Parameterised queries only; no way to pass a tenant. */
export interface TenantDb {
  query<R extends Row = Row>(text: string, params?: readonly unknown[]): Promise<QueryResult<R>>;
}

/** The tenant-bound object store tools get; keys are tenant-relative. */
export interface TenantObjects {
  get(key: string): Promise<Uint8Array | undefined>;
  getText(key: string): Promise<string | undefined>;
  put(key: string, body: string | Uint8Array, options?: { contentType?: string }): Promise<void>;
  delete(key: string): Promise<boolean>;
  list(
    prefix?: string,
    options?: { cursor?: string; limit?: number },
  ): Promise<{ keys: string[]; nextCursor?: string }>;
}

/** Everything a tool's `run` receives besides its input. */
export interface ToolContext {
  readonly tenant: TenantContext;
  /** The tenant's registry record (status, config, feature flags). */
  readonly tenantRecord: TenantRecord;
  readonly db: TenantDb;
  readonly storage: TenantObjects;
  readonly log: Logger;
  readonly requestId: string;
  readonly signal: AbortSignal;
}
