import type { ResolvedAuth, TenantryConfig } from "../config/resolve.js";
import type { Databases, Queryable } from "../db/database.js";
import { openDatabases, roleFromUrl } from "../db/open.js";
import type { AppMigration } from "../isolation/migrations.js";
import { sharedTenantTables } from "../isolation/migrations.js";
import { inspectDatabase, runtimeRoleOf, SAFETY_CHECKS, type SafetyCheck } from "../isolation/safety.js";
import { usesSchemas } from "../isolation/strategy.js";

/** One line of `tenantry doctor`. */
export interface DoctorCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface DoctorReport {
  /** True when every check passed. */
  readonly ok: boolean;
  readonly checks: DoctorCheck[];
}

export interface DoctorOptions {
  /** Databases already open (the CLI talking to a running server, tests); else opened and closed here. */
  databases?: Databases;
  /** Open the embedded database in memory (tests). */
  memoryDatabase?: boolean;
  /** The app's migrations: their tenant tables are checked even if the runtime role cannot reach them. */
  migrations?: readonly AppMigration[];
  /** `fetch` for the JWKS check (tests). */
  fetch?: typeof fetch;
  /** JWKS / discovery timeout; default 3000 ms. */
  timeoutMs?: number;
}

const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\]|::1)$/i;

function isLoopbackHost(host: string): boolean {
  return LOOPBACK.test(host);
}

/** What can be judged from the config alone. */
function configChecks(config: TenantryConfig): DoctorCheck[] {
  const checks: DoctorCheck[] = [];
  const auth = config.resolvedAuth;
  const authProblems: string[] = [];
  if (!auth.enabled) authProblems.push("auth.enabled = false: requests would not be authenticated");
  if (auth.provider === "dev" && !isLoopbackHost(config.server.host)) {
    authProblems.push(`provider "dev" on ${config.server.host}: the dev issuer is for local use only`);
  }
  if (auth.enabled && auth.provider !== "cognito" && auth.audiences.length === 0) {
    authProblems.push("no token audience");
  }
  checks.push({
    name: "config.auth",
    ok: authProblems.length === 0,
    detail:
      authProblems.length === 0
        ? `provider ${auth.provider}, issuer ${auth.issuers.join(" | ")}, isolation ${config.auth.multi_tenant.isolation}`
        : authProblems.join("; "),
  });

  const base = new URL(config.baseUrl);
  const plainHttp = base.protocol === "http:" && !isLoopbackHost(base.hostname);
  checks.push({
    name: "config.server",
    ok: !plainHttp,
    detail: plainHttp
      ? `server.base_url ${config.baseUrl} is plain http on a public host: bearer tokens would travel in clear`
      : `base_url ${config.baseUrl}`,
  });

  const { url, admin_url: adminUrl } = config.database;
  let dbCheck: DoctorCheck;
  if (!url) {
    dbCheck = { name: "config.database", ok: true, detail: "embedded PGlite (for development)" };
  } else {
    try {
      const runtime = roleFromUrl(url);
      const admin = roleFromUrl(adminUrl ?? url);
      dbCheck =
        runtime === admin
          ? {
              name: "config.database",
              ok: false,
              detail: `database.url and database.admin_url both connect as ${runtime}: the runtime role would own the tables (set admin_url to the owner role)`,
            }
          : { name: "config.database", ok: true, detail: `runtime role ${runtime}, owner role ${admin}` };
    } catch (error) {
      dbCheck = { name: "config.database", ok: false, detail: (error as Error).message };
    }
  }
  checks.push(dbCheck);
  return checks;
}

async function fetchJson(fetchImpl: typeof fetch, url: string, timeoutMs: number): Promise<unknown> {
  const res = await fetchImpl(url, {
    signal: AbortSignal.timeout(timeoutMs),
    headers: { accept: "application/json" },
  });
  if (!res.ok) throw new Error(`${url} answered HTTP ${res.status}`);
  return res.json();
}

/** The JWKS the verifier would use is reachable and holds keys (dev provider: skipped). */
export async function checkJwks(
  auth: ResolvedAuth,
  options: { fetch?: typeof fetch; timeoutMs?: number } = {},
): Promise<DoctorCheck> {
  const name = "jwks";
  if (!auth.enabled) return { name, ok: true, detail: "skipped: auth disabled" };
  if (auth.provider === "dev") return { name, ok: true, detail: "skipped: dev provider (keys are local)" };
  const fetchImpl = options.fetch ?? fetch;
  const timeoutMs = options.timeoutMs ?? 3000;
  let uri = auth.jwksUri;
  try {
    if (!uri) {
      const issuer = auth.issuers.find((i) => !i.includes("{tid}"));
      if (!issuer) return { name, ok: false, detail: "no jwks_uri and no issuer to discover it from" };
      const discovery = `${issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`;
      const doc = (await fetchJson(fetchImpl, discovery, timeoutMs)) as { jwks_uri?: unknown };
      if (typeof doc?.jwks_uri !== "string") {
        return { name, ok: false, detail: `${discovery} has no jwks_uri` };
      }
      uri = doc.jwks_uri;
    }
    const jwks = (await fetchJson(fetchImpl, uri, timeoutMs)) as { keys?: unknown };
    if (!Array.isArray(jwks?.keys) || jwks.keys.length === 0) {
      return { name, ok: false, detail: `${uri} holds no keys` };
    }
    return { name, ok: true, detail: `${uri}: ${jwks.keys.length} key(s)` };
  } catch (error) {
    const why =
      error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError")
        ? `no answer within ${timeoutMs} ms`
        : (error as Error).message;
    return { name, ok: false, detail: `${uri ?? "discovery"}: ${why}` };
  }
}

const LARGE_OBJECTS = "large_objects";

/**
 * Large objects have no RLS and belong to the database: those the runtime role owns (created by a
 * tool call) can be listed and read by every tenant's calls. Not a startup refusal, as the other
 * database checks are: the data is already shared, and refusing to serve would not unshare it.
 */
async function largeObjectCheck(db: Queryable, role: string): Promise<DoctorCheck> {
  const r = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_largeobject_metadata
      WHERE lomowner = (SELECT oid FROM pg_roles WHERE rolname = $1)`,
    [role],
  );
  const n = r.rows[0]?.n ?? 0;
  return n === 0
    ? { name: LARGE_OBJECTS, ok: true, detail: `no large object owned by ${role}` }
    : {
        name: LARGE_OBJECTS,
        ok: false,
        detail: `${n} large object(s) owned by ${role}: every tenant's calls can list and read them (lo_get); keep tenant data in tenant tables or object storage`,
      };
}

async function databaseChecks(config: TenantryConfig, options: DoctorOptions): Promise<DoctorCheck[]> {
  let dbs = options.databases;
  const opened = !dbs;
  let role: string;
  try {
    dbs ??= await openDatabases(config, { memory: options.memoryDatabase ?? false });
    await dbs.admin.query("SELECT 1");
    role = await runtimeRoleOf(dbs);
  } catch (error) {
    if (opened) await dbs?.close().catch(() => {});
    return [
      { name: "database.connect", ok: false, detail: (error as Error).message },
      ...[...SAFETY_CHECKS, LARGE_OBJECTS].map((name) => ({
        name,
        ok: false,
        detail: "not checked: database unreachable",
      })),
    ];
  }
  try {
    const tenantTables = usesSchemas(config.auth.multi_tenant.isolation)
      ? []
      : sharedTenantTables(options.migrations ?? []);
    const inspected: SafetyCheck[] = await inspectDatabase(dbs.admin, role, { tenantTables });
    return [
      { name: "database.connect", ok: true, detail: `connected; tool queries run as ${role}` },
      ...inspected,
      await largeObjectCheck(dbs.admin, role),
    ];
  } catch (error) {
    return [{ name: "database.inspect", ok: false, detail: (error as Error).message }];
  } finally {
    if (opened) await dbs.close().catch(() => {});
  }
}

/**
 * Checks a deployment: config sanity, database reachability, the runtime role (not superuser,
 * not BYPASSRLS, not a member of such a role, owns no tenant table), forced RLS with a policy on
 * every tenant table (every table of every tenant schema under schema_per_tenant), and the JWKS.
 * Never throws for a failed check; `ok` is false when any check failed.
 *
 * @example
 * const report = await runDoctor(await loadConfig("tenantry.toml"));
 * for (const c of report.checks) console.log(c.ok ? "ok  " : "FAIL", c.name, c.detail);
 * process.exitCode = report.ok ? 0 : 1;
 */
export async function runDoctor(config: TenantryConfig, options: DoctorOptions = {}): Promise<DoctorReport> {
  const [db, jwks] = await Promise.all([
    databaseChecks(config, options),
    checkJwks(config.resolvedAuth, options),
  ]);
  const checks = [...configChecks(config), ...db, jwks];
  return { ok: checks.every((c) => c.ok), checks };
}
